"""Clients that misbehave, against a live daemon: each gets a documented status code, and the
daemon, its slots and the other clients are unaffected.

Limits are shortened by the test configuration (1-2 s instead of 10-60 s). A client that does
not read is made with ``grpc.http2.bdp_probe`` off: grpc's client then stops taking data at
its 64 KiB flow-control window, as a stuck game loop would, instead of buffering megabytes.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import DaemonThread, start_daemon, wait_idle
from live_daemon import LiveDaemon, ends, read_in_thread

from npc_voice.client import speak_request
from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc

ABUSE_CONFIG = """
voices:
  tiny: {tiny: 0}
characters:
  guard: {voice: tiny}
  loud: {voice: tiny, format: {encoding: f32le, sample_rate: 48000}}   # 192 kB of audio a second
server:
  port: 0
  slots: 9
  max_queue_wait_s: 1.0
  max_text_bytes: 2000
  max_id_bytes: 32
  max_contexts_per_call: 3
  context_idle_timeout_s: 1.0
  max_buffered_text_bytes: 600
  max_output_buffer_bytes: 65536
  slow_reader_timeout_s: 2.0
  drain_grace_s: 1.0
"""

LONG_LINE = " ".join(["The caravan leaves at dawn, so pack your things and rest while you can."] * 8)  # ~40 s
NOT_READING = [("grpc.http2.bdp_probe", 0)]


@pytest.fixture(scope="module")
def abuse_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    d = start_daemon(tmp_path_factory.mktemp("abuse"), ABUSE_CONFIG)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def stub(abuse_daemon: DaemonThread) -> Iterator[pb_grpc.NpcVoiceStub]:
    with grpc.insecure_channel(abuse_daemon.address) as ch:
        yield pb_grpc.NpcVoiceStub(ch)


def converse(stub: pb_grpc.NpcVoiceStub, requests: list[pb.ConverseRequest], timeout: float = 30.0) -> object:
    """Send the requests, half-close, read everything: the responses or the RpcError."""
    try:
        return list(stub.Converse(iter(requests), timeout=timeout))
    except grpc.RpcError as e:
        return e


def assert_status(result: object, code: grpc.StatusCode, *words: str) -> None:
    assert isinstance(result, grpc.RpcError), result
    assert result.code() == code, (result.code(), result.details())
    for w in words:
        assert w in result.details(), result.details()


def speaks(stub: pb_grpc.NpcVoiceStub, character: str) -> None:
    """Another client, meanwhile: a short line completes."""
    events = list(stub.Speak(speak_request("Fine weather.", character), timeout=30))
    assert events[-1].end.reason == pb.END_REASON_COMPLETED


# -- ids and contexts -------------------------------------------------------------------------------


def test_over_long_ids_are_invalid_argument(stub: pb_grpc.NpcVoiceStub) -> None:
    long_instance = "guard/" + "x" * 40  # 46 bytes > max_id_bytes 32
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Speak(speak_request("Hello.", long_instance), timeout=10))
    assert_status(info.value, grpc.StatusCode.INVALID_ARGUMENT, "character is 46 bytes", "limit is 32")
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Speak(speak_request("Hello.", "guard", request_id="r" * 33), timeout=10))
    assert_status(info.value, grpc.StatusCode.INVALID_ARGUMENT, "request_id is 33 bytes")
    with pytest.raises(grpc.RpcError) as info:  # a megabyte id: refused before any lookup or log of it
        stub.ExportCharacterState(pb.ExportCharacterStateRequest(character="g" * (1 << 20)), timeout=10)
    assert_status(info.value, grpc.StatusCode.INVALID_ARGUMENT, "character is 1048576 bytes")
    result = converse(stub, [pb.ConverseRequest(context_id="c" * 33, text="Hello.")])
    assert_status(result, grpc.StatusCode.INVALID_ARGUMENT, "context_id is 33 bytes")
    config = pb.ConverseConfig(character="guard", request_id="q" * 40)
    result = converse(stub, [pb.ConverseRequest(context_id="a", config=config)])
    assert_status(result, grpc.StatusCode.INVALID_ARGUMENT, "request_id is 40 bytes")


def test_context_flood_is_refused_beyond_the_limit(stub: pb_grpc.NpcVoiceStub) -> None:
    # Messages without an action create nothing: 50 of them, then 3 real contexts, are fine.
    empty = [pb.ConverseRequest(context_id=f"empty{i}") for i in range(50)]
    real = [pb.ConverseRequest(context_id=f"c{i}", config=pb.ConverseConfig(character="guard")) for i in range(3)]
    result = converse(stub, empty + real)
    assert isinstance(result, list), result
    assert sorted(ends(result)) == ["c0", "c1", "c2"]
    # A fourth context while three are open ends the call.
    flood = [pb.ConverseRequest(context_id=f"c{i}", config=pb.ConverseConfig(character="guard")) for i in range(20)]
    result = converse(stub, flood)
    assert_status(result, grpc.StatusCode.RESOURCE_EXHAUSTED, "max_contexts_per_call (3)")
    # Closing a context at once does not dodge the limit: a closed context still speaking counts.
    cycled = []
    for i in range(12):
        cycled += [pb.ConverseRequest(context_id=f"k{i}", text="Hello there, traveller.")]
        cycled += [pb.ConverseRequest(context_id=f"k{i}", close=True)]
    result = converse(stub, cycled, timeout=60)
    assert_status(result, grpc.StatusCode.RESOURCE_EXHAUSTED, "max_contexts_per_call")
    assert wait_idle(stub).slots_in_use == 0


def test_idle_context_is_closed_after_the_timeout(stub: pb_grpc.NpcVoiceStub) -> None:
    requests: list[object] = [
        pb.ConverseRequest(context_id="quiet", config=pb.ConverseConfig(character="guard")),
        pb.ConverseRequest(context_id="talker", text="Well met."),
    ]
    gate = threading.Event()

    def feed() -> Iterator[pb.ConverseRequest]:
        yield from requests  # type: ignore[misc]
        gate.wait(20)  # the client keeps the call open but says nothing more

    t0 = time.monotonic()
    call = stub.Converse(feed(), timeout=30)
    got: dict[str, float] = {}
    reasons: dict[str, int] = {}
    for r in call:
        if r.HasField("end"):
            got[r.context_id] = time.monotonic() - t0
            reasons[r.context_id] = r.end.reason
        if len(got) == 2:
            break
    gate.set()
    rest = list(call)  # half-close: nothing open any more, the call ends OK
    assert not [r for r in rest if r.HasField("start")]
    assert reasons == {"quiet": pb.END_REASON_COMPLETED, "talker": pb.END_REASON_COMPLETED}
    assert 0.9 <= got["quiet"] < 5.0, got  # context_idle_timeout_s 1.0 (swept every 0.25 s)
    assert wait_idle(stub).slots_in_use == 0


def test_text_faster_than_speech_is_refused(stub: pb_grpc.NpcVoiceStub) -> None:
    piece = "We ride at dawn, and we ride hard, friend. "
    pieces = [pb.ConverseRequest(context_id="llm", text=piece) for _ in range(20)]
    result = converse(stub, pieces)  # 860 bytes queued at once > max_buffered_text_bytes 600
    assert_status(result, grpc.StatusCode.RESOURCE_EXHAUSTED, "max_buffered_text_bytes (600)")
    ok = converse(stub, pieces[:5])  # 215 bytes: fine
    assert isinstance(ok, list) and ends(ok) == {"llm": pb.END_REASON_COMPLETED}
    assert wait_idle(stub).slots_in_use == 0


# -- clients that stop reading ----------------------------------------------------------------------


def test_speak_client_that_stops_reading_is_cut_off(abuse_daemon: DaemonThread, stub: pb_grpc.NpcVoiceStub) -> None:
    with grpc.insecure_channel(abuse_daemon.address, options=NOT_READING) as ch:
        call = pb_grpc.NpcVoiceStub(ch).Speak(speak_request(LONG_LINE, "loud/sleepy"), timeout=60)
        first = next(call)
        assert first.HasField("start")
        t0 = time.monotonic()
        # The client reads nothing more. Within the write timeout (2 s) plus the time to fill its
        # window (~0.4 s at 192 kB/s), the daemon ends the call and frees the slot.
        stats = stub.GetStats(pb.GetStatsRequest())
        while stats.slots_in_use and time.monotonic() - t0 < 10:
            time.sleep(0.1)
            stats = stub.GetStats(pb.GetStatsRequest())
        freed_after = time.monotonic() - t0
        assert stats.slots_in_use == 0 and 1.5 < freed_after < 6.0, freed_after
        speaks(stub, "guard/other")  # another client is unaffected
        with pytest.raises(grpc.RpcError) as info:  # reading on: the buffered audio, then the status
            for _ in call:
                pass
        assert_status(info.value, grpc.StatusCode.RESOURCE_EXHAUSTED, "stopped reading")


def test_converse_client_that_stops_reading_is_cut_off(abuse_daemon: DaemonThread, stub: pb_grpc.NpcVoiceStub) -> None:
    gate = threading.Event()

    def feed() -> Iterator[pb.ConverseRequest]:
        yield pb.ConverseRequest(context_id="a", config=pb.ConverseConfig(character="loud/sleepy2"))
        yield pb.ConverseRequest(context_id="a", text=LONG_LINE[:1500] + ".")
        gate.wait(30)

    with grpc.insecure_channel(abuse_daemon.address, options=NOT_READING) as ch:
        call = pb_grpc.NpcVoiceStub(ch).Converse(feed(), timeout=60)
        assert next(call).HasField("start")
        t0 = time.monotonic()
        # 64 kB of audio waiting (max_output_buffer_bytes) is ~0.35 s at 192 kB/s once the window is full.
        stats = stub.GetStats(pb.GetStatsRequest())
        while stats.slots_in_use and time.monotonic() - t0 < 10:
            time.sleep(0.05)
            stats = stub.GetStats(pb.GetStatsRequest())
        freed_after = time.monotonic() - t0
        assert stats.slots_in_use == 0 and freed_after < 1.9, freed_after  # before the 2 s write timeout
        speaks(stub, "guard/other2")
        with pytest.raises(grpc.RpcError) as info:
            for _ in call:
                pass
        gate.set()
        assert_status(info.value, grpc.StatusCode.RESOURCE_EXHAUSTED, "max_output_buffer_bytes")


# -- a live process: SIGTERM mid-speech ---------------------------------------------------------------


def test_sigterm_mid_speech_every_client_sees_stream_end(tmp_path: Path) -> None:
    path = tmp_path / "voices.yaml"
    path.write_text(ABUSE_CONFIG.replace("slow_reader_timeout_s: 2.0", "slow_reader_timeout_s: 10.0"), "utf-8")
    live = LiveDaemon(path)
    try:
        with grpc.insecure_channel(live.address) as ch:
            stub = pb_grpc.NpcVoiceStub(ch)
            audio = [threading.Event() for _ in range(3)]
            speak = read_in_thread(stub.Speak(speak_request(LONG_LINE, "guard/1"), timeout=60), audio[0])
            talk = read_in_thread(
                stub.Converse(
                    iter(
                        [
                            pb.ConverseRequest(context_id="x", config=pb.ConverseConfig(character="guard/2")),
                            pb.ConverseRequest(context_id="x", text=LONG_LINE[:1000] + "."),
                        ]
                    ),
                    timeout=60,
                ),
                audio[1],
            )
            gate = threading.Event()

            def open_context() -> Iterator[pb.ConverseRequest]:  # an open call that says nothing more
                yield pb.ConverseRequest(context_id="y", config=pb.ConverseConfig(character="guard/3"))
                yield pb.ConverseRequest(context_id="y", text="Stay a while, and listen.")
                gate.wait(60)

            held = read_in_thread(stub.Converse(open_context(), timeout=60), audio[2])
            for a in audio:
                assert a.wait(30), live.output
            live.signal(signal.SIGTERM)
            refused = None  # a new call during the drain is refused
            for _ in range(20):
                try:
                    stub.ListCharacters(pb.ListCharactersRequest(), timeout=5)
                except grpc.RpcError as e:
                    refused = e.code(), e.details()
                    break
                time.sleep(0.05)
            # UNAVAILABLE from the daemon's drain gate (retryable), not a CANCELLED from a server mid-stop
            assert refused is not None and refused[0] == grpc.StatusCode.UNAVAILABLE, refused
            assert "shutting down" in refused[1], refused
            rc, waited = live.wait_exit(timeout_s=20)
            gate.set()
            assert rc == 0 and waited < 1.0 + 8.0, (rc, waited, live.output)  # drain_grace_s + margin
            for fut, context in ((speak, ""), (talk, "x"), (held, "y")):
                responses = fut.result(timeout=10)
                assert isinstance(responses, list), (responses, live.output)
                reason = ends(responses).get(context)
                assert reason in (pb.END_REASON_CANCELLED, pb.END_REASON_COMPLETED), (context, responses[-1:])
            assert ends(speak.result())[""] == pb.END_REASON_CANCELLED  # 40 s of speech cannot finish in 1 s
            assert "npc-voice stopped" in live.output
    finally:
        live.kill()


def test_import_of_a_nan_state_is_invalid_argument(stub: pb_grpc.NpcVoiceStub) -> None:
    import torch

    from npc_voice.engine.statefile import decode_state, encode_state

    data = stub.ExportCharacterState(pb.ExportCharacterStateRequest(character="guard/nan"), timeout=10).state
    voice, tensors = decode_state(bytes(data))
    poisoned = encode_state(
        voice, {name: torch.full_like(t, float("nan")) if t.is_floating_point() else t for name, t in tensors.items()}
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.ImportCharacterState(pb.ImportCharacterStateRequest(character="guard/nan", state=poisoned), timeout=10)
    assert_status(info.value, grpc.StatusCode.INVALID_ARGUMENT)
