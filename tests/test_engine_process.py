"""The engine in its own process (npc_voice.engine.process): same audio, same errors, same
lifecycle as the engine thread, and a dead engine process fails only its streams and comes back.

Real tiny voice, a real spawned engine process, a real pipe; the daemon test goes over gRPC.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from npc_voice.contracts import TextError
from npc_voice.engine import (
    Engine,
    EngineConfig,
    EngineUnavailableError,
    StateFormatError,
    UnknownVoiceError,
    VoiceControls,
)
from npc_voice.engine.process import ProcessEngine
from npc_voice.model import tiny_voice
from npc_voice.model.api import VoiceModel
from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc
from tests.conftest import TINY_CONFIG, start_daemon, wait_idle
from tests.test_engine import FREE_RUN, LINE, LINE2, LONG, K, assert_same_audio, collect, direct_render, settled, speak


def config(**kw: float) -> EngineConfig:
    cfg = {"slots": 8, "frames_per_tick": K, "threads": 1, "lookahead_ms": FREE_RUN, "max_queue_wait_s": 5.0}
    cfg.update(kw)
    return EngineConfig(**cfg)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def voice() -> VoiceModel:
    return tiny_voice(0)


@pytest.fixture(scope="module")
def proc(voice: VoiceModel) -> Iterator[ProcessEngine]:
    with ProcessEngine({"tiny": voice}, config()) as engine:
        yield engine


def test_audio_from_the_engine_process_equals_rendering_it_directly(proc: ProcessEngine, voice: VoiceModel) -> None:
    assert proc.pid is not None and proc.pid != os.getpid()
    _, pcm, end = collect(speak(proc, "p/guard", LINE))  # type: ignore[arg-type]
    assert end.reason == "completed"
    assert_same_audio(pcm, direct_render(voice, [LINE]))
    _, pcm2, _ = collect(speak(proc, "p/guard", LINE2))  # type: ignore[arg-type]  # the state lives on there
    assert_same_audio(np.concatenate([pcm, pcm2]), direct_render(voice, [LINE, LINE2]))


def test_state_export_import_and_reset_cross_the_process(proc: ProcessEngine, voice: VoiceModel) -> None:
    collect(speak(proc, "p/hero", LINE))  # type: ignore[arg-type]
    data = proc.export_character("p/hero")
    with Engine({"tiny": voice}, config()) as local:  # another daemon, engine in its thread
        local.import_character("hero", data)
        _, there, _ = collect(speak(local, "hero", LINE2))
    _, here, _ = collect(speak(proc, "p/hero", LINE2))  # type: ignore[arg-type]
    assert_same_audio(here, there)
    proc.import_character("p/copy", data)
    assert proc.export_character("p/copy") == data
    with pytest.raises(StateFormatError, match="crc32"):  # the engine process's error reaches the caller
        proc.import_character("p/x", data[:-1] + bytes([data[-1] ^ 1]))
    proc.reset_character("p/hero")
    _, fresh, _ = collect(speak(proc, "p/hero", LINE2))  # type: ignore[arg-type]
    assert_same_audio(fresh, direct_render(voice, [LINE2]))


def test_bad_requests_are_refused_before_anything_crosses(proc: ProcessEngine) -> None:
    with pytest.raises(UnknownVoiceError):
        proc.open_stream("p/a", "nope", VoiceControls(), {}, 22050, "r")
    with pytest.raises(ValueError, match="sample rate"):
        proc.open_stream("p/a", "tiny", VoiceControls(), {}, 12345, "r")
    stream = proc.open_stream("p/a", "tiny", VoiceControls(), {}, 22050, "r")
    with pytest.raises(TextError):
        stream.say("")
    with pytest.raises(TextError):  # the stream ended "failed" in the engine process, with the same error
        list(stream.events_sync(timeout=10))


def test_cancels_and_closes_keep_the_counters_whole(proc: ProcessEngine) -> None:
    before = proc.stats()
    streams = [speak(proc, f"p/crowd/{i}", LONG) for i in range(6)]  # type: ignore[arg-type]
    for s in streams[:2]:
        s.cancel()
    for s in streams[2:4]:
        s.close()
    ends = [collect(s)[2].reason for s in streams[4:]]
    assert ends == ["completed", "completed"]
    assert [s.wait_ended(10) is not None for s in streams[:2]] == [True, True]
    stats = settled(proc, lambda s: s.active_streams == 0 and s.streams_waiting == 0  # type: ignore[arg-type]
                    and s.lines_opened - before.lines_opened == 6
                    and s.lines_completed + s.lines_cancelled - before.lines_completed - before.lines_cancelled == 6)
    assert stats.slots_in_use == 0 and stats.serving


def test_a_killed_engine_process_fails_its_streams_then_a_new_one_serves(voice: VoiceModel) -> None:
    with ProcessEngine({"tiny": voice}, config(lookahead_ms=100.0)) as engine:  # paced: still speaking when killed
        stream = speak(engine, "k/guard", LONG)  # type: ignore[arg-type]
        events = stream.events_sync(timeout=10)
        next(events)  # it speaks
        first = engine.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(EngineUnavailableError, match="exited unexpectedly"):
            for _ in events:
                pass
        assert time.monotonic() - t0 < 5.0
        with pytest.raises(EngineUnavailableError):  # while it restarts: refused at once, not hung
            engine.open_stream("k/x", "tiny", VoiceControls(), {}, 22050, "r")
        assert not engine.stats().serving
        deadline = time.monotonic() + 60
        while not engine.stats().serving:
            assert time.monotonic() < deadline, "the engine process did not come back"
            time.sleep(0.05)
        assert engine.pid not in (None, first) and engine.restarts == 1
        _, pcm, end = collect(speak(engine, "k/guard", LINE))  # type: ignore[arg-type]  # states died with it
        assert end.reason == "completed"
        assert_same_audio(pcm, direct_render(voice, [LINE]))
        pid = engine.pid
    assert pid is not None
    deadline = time.monotonic() + 10  # close() stopped it
    while _alive(pid):
        assert time.monotonic() < deadline, f"engine process {pid} still running after close()"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:  # a zombie is gone for our purposes
        return f.read().split(") ")[-1][0] != "Z"


def test_daemon_with_the_engine_process_survives_its_death(tmp_path: Path) -> None:
    """Over gRPC: the engine process is killed mid-Speak; that call ends UNAVAILABLE, health goes
    NOT_SERVING, then SERVING again, and the next Speak completes."""
    text = TINY_CONFIG.replace("server:\n", "server:\n  engine_process: on\n  lookahead_ms: 100\n", 1)
    text = text.replace("  lookahead_ms: 150\n", "")
    d = start_daemon(tmp_path, text)
    try:
        engine = d.daemon.engine
        assert isinstance(engine, ProcessEngine)
        with grpc.insecure_channel(d.address) as channel:
            stub = pb_grpc.NpcVoiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            call = stub.Speak(pb.SpeakRequest(character="guard", text=LONG), timeout=30)
            next(call)  # StreamStart
            pid = engine.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(grpc.RpcError) as err:
                for _ in call:
                    pass
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            seen = set()
            deadline = time.monotonic() + 60
            while True:
                status = health.Check(health_pb2.HealthCheckRequest(service="")).status
                seen.add(status)
                if status == health_pb2.HealthCheckResponse.SERVING and engine.pid not in (None, pid):
                    break
                assert time.monotonic() < deadline, "the daemon did not serve again"
                time.sleep(0.05)
            assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
            responses = list(stub.Speak(pb.SpeakRequest(character="guard", text=LINE), timeout=30))
            assert responses[-1].WhichOneof("event") == "end"
            assert responses[-1].end.reason == pb.END_REASON_COMPLETED
            assert wait_idle(stub).active_streams == 0
    finally:
        d.stop()


@pytest.mark.parametrize("after_s", [0.1, 1.5])  # while waiting to restart / while the new one starts
def test_close_during_a_restart_leaves_no_engine_process(voice: VoiceModel, after_s: float) -> None:
    import multiprocessing

    others = {p.pid for p in multiprocessing.active_children()}  # e.g. the module's engine
    engine = ProcessEngine({"tiny": voice}, config())
    engine.start()
    pid = engine.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(after_s)
    t0 = time.monotonic()
    engine.close()
    assert time.monotonic() - t0 < 30.0
    deadline = time.monotonic() + 10
    while [p for p in multiprocessing.active_children() if p.name == "npc-voice-engine" and p.pid not in others]:
        assert time.monotonic() < deadline, multiprocessing.active_children()
        time.sleep(0.05)
    with pytest.raises(EngineUnavailableError):
        engine.open_stream("c/x", "tiny", VoiceControls(), {}, 22050, "r")


def test_a_link_closing_its_side_still_reads_until_the_other_side_closes() -> None:
    """``Link.close`` stops writing (the other side reads EOF) but its reader keeps the
    connection until the other side's EOF: a message already on its way still arrives, every
    thread ends without an exception, each side hears EOF once, and the descriptor is closed
    only after both of a side's threads are done (before, the sender closed it under the
    reader: a ``TypeError`` inside multiprocessing at shutdown, or a message lost)."""
    import multiprocessing
    import threading

    from npc_voice.engine.process import Link

    a_conn, b_conn = multiprocessing.get_context("spawn").Pipe(duplex=True)
    crashes: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: crashes.append(args.exc_value)
    got: list[tuple[str, int]] = []
    in_first, release = threading.Event(), threading.Event()
    eofs = {"a": 0, "b": 0}

    def handle_a(message: tuple[str, int]) -> None:
        got.append(message)
        if message[1] == 1:
            in_first.set()
            assert release.wait(10.0)

    def eof(side: str) -> None:
        eofs[side] += 1

    a = Link(a_conn, "test-a", handle_a, lambda: eof("a"))  # type: ignore[arg-type]
    b = Link(b_conn, "test-b", lambda m: None, lambda: eof("b"))
    try:
        a.start()
        b.start()
        b.send(("m", 1))
        assert in_first.wait(10.0)  # a's reader is inside the handling of message 1
        b.send(("m", 2))  # on its way while a closes
        time.sleep(0.2)
        a.close()
        assert not a_conn.closed  # a's reader still needs it
        release.set()
        a.join_reader(10.0)
        b.join_reader(10.0)
        deadline = time.monotonic() + 10.0
        while not (a_conn.closed and b_conn.closed) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [("m", 1), ("m", 2)]
        assert eofs == {"a": 1, "b": 1}
        assert a_conn.closed and b_conn.closed  # each by the last of its side's two threads
        assert crashes == []
    finally:
        release.set()
        threading.excepthook = hook
