#!/usr/bin/env bash
# Writes the Unity .meta file of every asset in the package that lacks one. Packages installed from a git URL
# are read-only, and Unity ignores assets without .meta files there, so they are committed. GUIDs derive from
# the path (stable, unique per path); existing .meta files are never changed. Folders ending in "~" and dot
# files are invisible to Unity and get none.
set -euo pipefail
cd "$(dirname "$0")/.."
importer() {
  case "$1" in
    *.cs) printf 'MonoImporter:\n  externalObjects: {}\n  serializedVersion: 2\n  defaultReferences: []\n  executionOrder: 0\n  icon: {instanceID: 0}\n' ;;
    *.asmdef) printf 'AssemblyDefinitionImporter:\n  externalObjects: {}\n' ;;
    package.json) printf 'PackageManifestImporter:\n  externalObjects: {}\n' ;;
    *.md|*.json|*.txt) printf 'TextScriptImporter:\n  externalObjects: {}\n' ;;
    *) printf 'DefaultImporter:\n  externalObjects: {}\n' ;;
  esac
}
find . -mindepth 1 \( -name '*~' -o -name '.*' \) -prune -o -print | sed 's|^\./||' | sort | while read -r path; do
  case "$path" in *.meta) continue ;; esac
  meta="$path.meta"
  [ -e "$meta" ] && continue
  guid=$(printf 'dev.npcvoice.unity/%s' "$path" | md5sum | cut -c1-32)
  {
    printf 'fileFormatVersion: 2\nguid: %s\n' "$guid"
    if [ -d "$path" ]; then
      printf 'folderAsset: yes\nDefaultImporter:\n  externalObjects: {}\n'
    else
      importer "$path"
    fi
    printf '  userData: \n  assetBundleName: \n  assetBundleVariant: \n'
  } >"$meta"
  echo "wrote $meta"
done
