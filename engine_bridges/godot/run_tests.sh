#!/usr/bin/env bash
# Run the Godot addon's headless test suite with Godot 4 from the cached Debian sid chroot
# (install_toolchain.sh). Live tests talk to the daemon at NPC_VOICE_ADDR (host:port); without
# it they are reported as skipped. Prints the suite's output and, last, exactly one line
#   godot: N passed, N failed[, N skipped]
# Exit: 0 all passed, 1 a failure, 77 Godot 4 could not be obtained (a loud SKIP, never a pass).
#
# NPC_VOICE_GODOT_TESTS=substring runs only matching tests; NPC_VOICE_GODOT_TIMEOUT bounds
# the whole run in seconds (default 600). `run_tests.sh --bench` prints the costs measured by
# tests/bench.gd instead (no pass/fail).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
testdata="$(dirname "$here")/testdata"
cache="${NPC_VOICE_CACHE:-$HOME/.cache/npc-voice}"
chroot_dir="${GODOT_CHROOT:-$cache/godot-chroot}"

if ! "$here/install_toolchain.sh"; then
    echo "godot: SKIP — Godot 4 could not be obtained (install_toolchain.sh failed; logs in $cache)"
    exit 77
fi

# Names such as "localhost" in NPC_VOICE_ADDR resolve through the chroot's own /etc/hosts.
[ -s "$chroot_dir/etc/hosts" ] || cp /etc/hosts "$chroot_dir/etc/hosts"

# The project is copied into the chroot (Godot writes .godot/ caches next to it).
work="$(mktemp -d "$chroot_dir/tmp/npc-voice-godot.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -r "$here/addons" "$here/tests" "$here/sample" "$here/project.godot" "$work/"
mkdir -p "$work/tests/testdata"
cp "$testdata"/*.json "$work/tests/testdata/"
log="$work/test.log"

if [ "${1:-}" = --bench ]; then
    timeout --kill-after=10 600 chroot "$chroot_dir" env NPC_VOICE_ADDR="${NPC_VOICE_ADDR:-}" \
        godot --headless --path "/tmp/$(basename "$work")" -s res://tests/bench.gd 2>&1 \
        | grep -v -e '/proc/self/exe' -e 'at: get_executable_path' -e 'ObjectDB instances leaked' -e 'at: cleanup'
    exit "${PIPESTATUS[0]}"
fi

timeout --kill-after=10 "${NPC_VOICE_GODOT_TIMEOUT:-600}" \
    chroot "$chroot_dir" env NPC_VOICE_ADDR="${NPC_VOICE_ADDR:-}" NPC_VOICE_GODOT_TESTS="${NPC_VOICE_GODOT_TESTS:-}" \
    godot --headless --path "/tmp/$(basename "$work")" -s res://tests/test_main.gd 2>&1 \
    | grep --line-buffered -v -e 'Couldn.t get executable path from /proc/self/exe' -e 'at: get_executable_path' \
    | tee "$log"
rc=${PIPESTATUS[0]}

summary="$(grep -E '^npc-voice-godot-summary passed=[0-9]+ failed=[0-9]+ skipped=[0-9]+$' "$log" | tail -1)"
if [ -z "$summary" ]; then
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then why="timed out"; else why="exit code $rc"; fi
    echo "godot: the suite did not finish ($why; a script that fails to compile can end or hang Godot)"
    passed=$(grep -c '^PASS ' "$log"); failed=$(( $(grep -c '^FAIL ' "$log") + 1 )); skipped=0
else
    read -r passed failed skipped <<<"$(sed -E 's/.*passed=([0-9]+) failed=([0-9]+) skipped=([0-9]+)/\1 \2 \3/' <<<"$summary")"
    if grep -q '^SCRIPT ERROR' "$log"; then
        echo "godot: script errors in the log (see above)"
        failed=$((failed + 1))
    fi
fi
line="godot: $passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
