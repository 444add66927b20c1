"""Engine core v2 through the daemon, over real gRPC on loopback: busy-character policies,
a same-character stampede, and steady speakers beside a storm of dropped lines (churn)."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import pytest

from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc
from tests.conftest import DaemonThread, wait_idle

LONG = "The old bridge to the north washed away in the spring floods, so take the mountain pass."
SHORT = "Halt! Who goes there?"


def speak_events(stub: pb_grpc.NpcVoiceStub, character: str, text: str, policy: int = 0) -> list[pb.SpeakResponse]:
    req = pb.SpeakRequest(character=character, text=text, busy_policy=policy)  # type: ignore[arg-type]
    return list(stub.Speak(req, timeout=60))


def test_interrupt_ends_the_current_line_interrupted_and_speaks_the_new_one(stub: pb_grpc.NpcVoiceStub) -> None:
    first = stub.Speak(pb.SpeakRequest(character="guard/barge", text=LONG), timeout=60)
    got = [next(first), next(first), next(first)]  # start, marks, first audio: it is speaking
    second = speak_events(stub, "guard/barge", SHORT, pb.BUSY_POLICY_INTERRUPT)
    got += list(first)
    assert got[-1].WhichOneof("event") == "end" and got[-1].end.reason == pb.END_REASON_INTERRUPTED
    assert second[-1].end.reason == pb.END_REASON_COMPLETED
    assert wait_idle(stub).active_streams == 0


def test_reject_refuses_a_busy_character_at_once(stub: pb_grpc.NpcVoiceStub) -> None:
    first = stub.Speak(pb.SpeakRequest(character="guard/busy", text=LONG), timeout=60)
    next(first)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        speak_events(stub, "guard/busy", SHORT, pb.BUSY_POLICY_REJECT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert "busy" in info.value.details()  # type: ignore[attr-defined]
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(grpc.RpcError) as bad:
        speak_events(stub, "guard/busy", SHORT, 9)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    first.cancel()
    assert wait_idle(stub).active_streams == 0


def test_300_concurrent_lines_for_one_character_end_within_the_bound(daemon: DaemonThread) -> None:
    """Each ends completed or RESOURCE_EXHAUSTED, all within max_queue_wait_s (1 s in the test
    config) plus one line's length: nothing waits without bound behind its own character."""

    async def run() -> tuple[dict[str, int], float, float]:
        async with grpc.aio.insecure_channel(daemon.address) as channel:
            stub = pb_grpc.NpcVoiceStub(channel)

            async def one(i: int) -> tuple[str, float]:
                req = pb.SpeakRequest(character="guard/crowd", text=SHORT, request_id=f"crowd-{i}")
                audio = 0
                try:
                    async for resp in stub.Speak(req, timeout=60):
                        if resp.WhichOneof("event") == "audio":
                            audio += len(resp.audio.pcm) // 2
                    return "completed", audio / 22050
                except grpc.aio.AioRpcError as e:
                    return e.code().name, 0.0

            t0 = time.monotonic()
            results = await asyncio.gather(*(one(i) for i in range(300)))
            wall = time.monotonic() - t0
        counts: dict[str, int] = {}
        for outcome, _ in results:
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts, wall, max(seconds for _, seconds in results)

    counts, wall, line_s = asyncio.run(run())
    assert set(counts) <= {"completed", "RESOURCE_EXHAUSTED"}, counts
    assert counts.get("completed", 0) >= 1
    assert wall < 1.0 + line_s + 10.0, (wall, line_s)  # the bound, plus slack for a loaded 2-core machine


def test_churn_scenario_every_steady_line_completes_and_the_daemon_settles(
    daemon: DaemonThread, tmp_path: Path
) -> None:
    """`npc-voice loadtest --scenario churn`: steady speakers beside clients that drop their lines
    (cancel after start or first chunk, short deadlines, Cancel RPC)."""
    from npc_voice.cli import main

    report_path = tmp_path / "churn.json"
    rc = main(["loadtest", "--server", daemon.address, "--streams", "8", "--duration", "4", "--scenario", "churn",
               "--quiet", "--report", str(report_path)])
    assert rc == 0
    report = json.loads(report_path.read_text())
    steady, churn = report["counts_by_kind"]["steady"], report["counts_by_kind"]["churn"]
    assert steady["started"] >= 2 and steady["completed"] == steady["started"], steady
    assert churn["started"] >= 10 and churn["failed"] == 0, (churn, report["errors"])
    assert report["target"]["steady_all_completed"] and report["settled_s"] is not None
    end = report["server_stats_end"]
    assert end.get("active_streams", 0) == 0
    assert end["lines_opened"] == sum(end.get(k, 0) for k in ("lines_completed", "lines_cancelled", "lines_rejected",
                                                              "lines_failed", "lines_interrupted"))


def test_continuous_scenario_reports_batch_fill(daemon: DaemonThread, tmp_path: Path) -> None:
    from npc_voice.cli import main

    report_path = tmp_path / "cont.json"
    rc = main(["loadtest", "--server", daemon.address, "--streams", "3", "--duration", "3", "--scenario",
               "continuous", "--quiet", "--report", str(report_path)])
    assert rc == 0
    report = json.loads(report_path.read_text())
    kinds = report["counts_by_kind"]
    assert set(kinds) == {"continuous"} and kinds["continuous"]["completed"] >= 3
    assert 0.0 < report["batch_fill"] <= 1.0
