#!/usr/bin/env bash
# Builds the Unity package's C# with mono (core, MonoBehaviour glue against Stubs~/, sample, tests) and runs
# the NUnit suites (Tests/, and GlueTests~/ which drives NpcVoiceSource through the stubs). Live tests talk to the daemon at $NPC_VOICE_ADDR (host:port); without it they are skipped,
# loudly. The last line is always "unity: N passed, N failed" (or a SKIPPED line with exit 77 when the
# toolchain is missing: run install_toolchain.sh). Exit status: 0 only when nothing failed.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="$here/Build~"
nunit_fw="${NUNIT_FRAMEWORK:-/usr/lib/cli/nunit.framework-2.6.3/nunit.framework.dll}"

for tool in mcs mono nunit-console; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "unity: SKIPPED — '$tool' not found (run $here/install_toolchain.sh)"; exit 77
  fi
done
if [ ! -f "$nunit_fw" ]; then
  echo "unity: SKIPPED — $nunit_fw not found (run $here/install_toolchain.sh)"; exit 77
fi

rm -rf "$build" && mkdir -p "$build"
fail_build() { echo "unity: build failed: $1"; echo "unity: 0 passed, 1 failed"; exit 1; }
csc() { # csc OUT.dll SOURCES... [-r:REF ...]: a C# 7.2 library, warnings as errors
  local out="$1"; shift
  nice -n 10 mcs -langversion:7.2 -target:library -warnaserror+ -nowarn:1591 -out:"$build/$out" "$@" \
    >"$build/$out.log" 2>&1 || { cat "$build/$out.log"; fail_build "$out"; }
}
cd "$here"
csc NpcVoice.Runtime.dll -recurse:'Runtime/Net/*.cs' -recurse:'Runtime/V1/*.cs' -recurse:'Runtime/Client/*.cs' \
  -recurse:'Runtime/Audio/*.cs'
csc UnityEngine.dll 'Stubs~/UnityEngine.cs'
csc NpcVoice.Unity.dll -recurse:'Runtime/Unity/*.cs' -r:"$build/NpcVoice.Runtime.dll" -r:"$build/UnityEngine.dll"
csc NpcVoice.Samples.dll -recurse:'Samples~/*.cs' -r:"$build/NpcVoice.Runtime.dll" -r:"$build/NpcVoice.Unity.dll" \
  -r:"$build/UnityEngine.dll"
csc NpcVoice.Tests.dll -recurse:'Tests/*.cs' -r:"$build/NpcVoice.Runtime.dll" -r:"$nunit_fw"
# The MonoBehaviour glue driven against the stubs (outside Unity only).
csc NpcVoice.GlueTests.dll -recurse:'GlueTests~/*.cs' -r:"$build/NpcVoice.Runtime.dll" -r:"$build/NpcVoice.Unity.dll" \
  -r:"$build/UnityEngine.dll" -r:"$nunit_fw"
cp "$nunit_fw" "$build/"

export NPC_VOICE_HPACK_VECTORS="${NPC_VOICE_HPACK_VECTORS:-$root/engine_bridges/testdata/hpack_vectors.json}"
export NPC_VOICE_UNITY_PACKAGE="$here"
if [ -z "${NPC_VOICE_ADDR:-}" ]; then
  echo "unity: WARNING — NPC_VOICE_ADDR is not set: LIVE TESTS ARE SKIPPED (start 'npc-voice serve' and export it)"
fi

cd "$build"
timeout "${UNITY_TEST_TIMEOUT:-900}" nice -n 10 nunit-console -nologo -labels -xml="$build/results.xml" \
  "$build/NpcVoice.Tests.dll" "$build/NpcVoice.GlueTests.dll" >"$build/nunit.log" 2>&1
rc=$?
# Show failures and skips, not the whole log.
sed -n '/^Tests run:/,$p' "$build/nunit.log" | grep -v '^   *at ' | head -200
if [ ! -f "$build/results.xml" ]; then
  tail -50 "$build/nunit.log"; echo "unity: nunit-console produced no results (exit $rc)"; echo "unity: 0 passed, 1 failed"; exit 1
fi
attr() { grep -o "<test-results [^>]*" "$build/results.xml" | grep -o " $1=\"[0-9]*\"" | grep -o "[0-9]*"; }
total=$(attr total); errors=$(attr errors); failures=$(attr failures)
inconclusive=$(attr inconclusive); ignored=$(attr ignored)
failed=$((errors + failures))
passed=$((total - failed - inconclusive))
[ "$ignored" -gt 0 ] && echo "unity: $ignored test(s) SKIPPED (ignored), $inconclusive inconclusive"
[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1  # nunit-console itself failed
echo "unity: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
