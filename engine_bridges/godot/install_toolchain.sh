#!/usr/bin/env bash
# Install a headless Godot 4 for the addon's tests, idempotently.
#
# Debian stable has no Godot 4, so Debian sid's `godot` package is installed into a
# debootstrap chroot cached OUTSIDE the checkout:
#   ${NPC_VOICE_CACHE:-$HOME/.cache/npc-voice}/godot-chroot
# The mirror is taken from this machine's apt sources. Re-running is cheap: a chroot whose
# godot answers --version is reused as is.
#
# Exit codes: 0 = godot usable, 77 = the engine could not be obtained (caller skips loudly).
set -uo pipefail

CACHE="${NPC_VOICE_CACHE:-$HOME/.cache/npc-voice}"
CHROOT="${GODOT_CHROOT:-$CACHE/godot-chroot}"
LOCK="$CACHE/godot-chroot.lock"

log() { echo "install_toolchain: $*" >&2; }

godot_ok() {
    [ -x "$CHROOT/usr/bin/godot" ] && timeout 60 chroot "$CHROOT" godot --headless --version >/dev/null 2>&1
}

debian_mirror() {
    # First http(s) Debian mirror in the apt sources (deb822 or one-line format).
    local uri
    uri=$(grep -hsE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -1)
    if [ -z "$uri" ]; then
        uri=$(grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' | grep -E '/debian/?$' | head -1)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

main() {
    if [ "$(id -u)" != 0 ]; then
        log "needs root (debootstrap and chroot)"
        return 77
    fi
    mkdir -p "$CACHE"
    exec 9>"$LOCK"
    flock 9
    if godot_ok; then
        log "godot already installed in $CHROOT"
        return 0
    fi
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 || true
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap >/dev/null 2>&1 || {
            log "could not install debootstrap"
            return 77
        }
    fi
    local mirror
    mirror=$(debian_mirror)
    if [ ! -x "$CHROOT/usr/bin/apt-get" ]; then
        log "debootstrap sid into $CHROOT from $mirror (about a minute)"
        rm -rf "$CHROOT"
        if ! debootstrap --variant=minbase sid "$CHROOT" "$mirror" >"$CACHE/debootstrap.log" 2>&1; then
            log "debootstrap failed; see $CACHE/debootstrap.log"
            rm -rf "$CHROOT"
            return 77
        fi
    fi
    log "apt-get install godot in the chroot"
    if ! chroot "$CHROOT" apt-get -o Acquire::Check-Valid-Until=false -o DPkg::Lock::Timeout=600 update -qq >"$CACHE/godot-apt.log" 2>&1 \
        || ! DEBIAN_FRONTEND=noninteractive chroot "$CHROOT" apt-get -o Acquire::Check-Valid-Until=false \
            install -y --no-install-recommends godot >>"$CACHE/godot-apt.log" 2>&1; then
        log "apt-get install godot failed; see $CACHE/godot-apt.log"
        return 77
    fi
    chroot "$CHROOT" apt-get clean >/dev/null 2>&1 || true  # the .debs: ~200 MB of cache
    if ! godot_ok; then
        log "godot installed but does not run headless"
        return 77
    fi
    local version
    version=$(timeout 60 chroot "$CHROOT" godot --headless --version 2>/dev/null | tail -1)
    log "godot ready: $version"
    case "$version" in
        4.*) ;;
        *) log "WARNING: the addon is written for Godot 4; sid now ships $version" ;;
    esac
    return 0
}

main "$@"
