#!/usr/bin/env bash
# Starts `npc-voice serve` on a free loopback port and runs the Unity and Godot suites
# against it. Each suite prints one final line "<engine>: N passed, N failed".
# A suite whose toolchain is missing is skipped LOUDLY (exit 77 from its run_tests.sh);
# with REQUIRE_BRIDGES=1 (CI) a skip is a failure.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
bin="$root/.venv/bin"
port="$("$bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="$(mktemp -t npc-voice-bridges.XXXXXX.log)"

"$bin/npc-voice" serve --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT

# Wait for the daemon's health service (bounded: never hang).
if ! "$bin/python" - "$port" <<'PY'
import sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
addr = f"127.0.0.1:{sys.argv[1]}"
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        with grpc.insecure_channel(addr) as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
            if r.status == health_pb2.HealthCheckResponse.SERVING:
                sys.exit(0)
    except grpc.RpcError:
        pass
    time.sleep(0.5)
sys.exit(1)
PY
then
  echo "bridges: daemon did not become healthy on port $port; its log:"; cat "$log"; exit 1
fi
export NPC_VOICE_ADDR="127.0.0.1:$port"

status=0
for engine in unity godot; do
  script="$here/$engine/run_tests.sh"
  if [ ! -x "$script" ]; then
    echo "$engine: SKIPPED — $script not found"; [ "${REQUIRE_BRIDGES:-0}" = 1 ] && status=1; continue
  fi
  "$script"; rc=$?
  if [ $rc -eq 77 ]; then
    echo "$engine: SKIPPED — toolchain not installed (run $here/$engine/install_toolchain.sh)"
    [ "${REQUIRE_BRIDGES:-0}" = 1 ] && status=1
  elif [ $rc -ne 0 ]; then
    status=1
  fi
done
exit $status
