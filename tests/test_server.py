"""End to end over a real grpc.aio daemon on loopback with tiny random voices."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import TINY_CONFIG, DaemonThread, start_daemon, wait_idle
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from npc_voice.client import collect, decode_pcm, speak_request
from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc

SHORT = "Hello there."
LONG = "Halt, who goes there? State your name and your business in the city, traveller, or turn back now."


def speak(stub: pb_grpc.NpcVoiceStub, text: str = SHORT, character: str = "", **kw: object) -> list[pb.SpeakResponse]:
    return list(stub.Speak(speak_request(text, character, **kw)))  # type: ignore[arg-type]


def check_stream(events: list[pb.SpeakResponse]) -> tuple[np.ndarray, pb.StreamStart, pb.StreamEnd]:
    """Start first, end last, contiguous offsets, marks before and within their audio."""
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("start") == 1 and kinds.count("end") == 1
    start, end = events[0].start, events[-1].end
    width = 4 if start.format.encoding == pb.PCM_F32LE else 2
    offset = 0
    chunks = []
    for e in events[1:-1]:
        if e.HasField("audio"):
            assert e.audio.sample_offset == offset
            assert len(e.audio.pcm) % width == 0
            chunk = decode_pcm(e.audio.pcm, start.format.encoding)
            offset += len(chunk)
            chunks.append(chunk)
        else:
            for group in (e.marks.phonemes, e.marks.visemes, e.marks.words):
                for m in group:
                    assert m.start_sample >= offset, "marks must come before the audio they describe"
                    assert m.start_sample <= m.end_sample
    assert end.total_samples == offset
    for e in events if end.reason == pb.END_REASON_COMPLETED else ():  # a cancelled line stops mid-mark
        if e.HasField("marks"):
            for m in e.marks.phonemes:
                assert m.end_sample <= end.total_samples
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return pcm, start, end


def test_speak_stream_order_accounting_and_marks(stub: pb_grpc.NpcVoiceStub) -> None:
    events = speak(stub, SHORT, "guard/speak", request_id="abc")
    pcm, start, end = check_stream(events)
    assert start.request_id == "abc" and end.request_id == "abc"
    assert start.character == "guard/speak" and start.voice == "tiny"
    assert start.format.encoding == pb.PCM_S16LE and start.format.sample_rate_hz == 22050
    assert end.reason == pb.END_REASON_COMPLETED and end.total_samples > 0
    assert end.timings.audio_ms == pytest.approx(1000 * end.total_samples / 22050)
    assert end.timings.total_ms >= end.timings.first_audio_ms >= 0
    assert np.isfinite(pcm).all() and np.abs(pcm).max() <= 1.0
    marks = [e.marks for e in events if e.HasField("marks")]
    assert marks and any(m.words for m in marks) and any(m.visemes for m in marks)
    words = [w.label for m in marks for w in m.words]
    assert [w.lower().strip(".") for w in words] == ["hello", "there"]


def test_default_character_and_its_format(stub: pb_grpc.NpcVoiceStub) -> None:
    _, start, _ = check_stream(speak(stub, SHORT, ""))
    assert start.character == "guard"
    _, start, _ = check_stream(speak(stub, SHORT, "goblin/fmt"))  # configured default f32le @ 16 kHz
    assert (start.format.encoding, start.format.sample_rate_hz) == (pb.PCM_F32LE, 16000)


def test_all_rates_and_encodings(stub: pb_grpc.NpcVoiceStub) -> None:
    """Fresh instances speak the same line; the length at each rate follows the native one."""
    lengths = {}
    for rate in (22050, 16000, 24000, 44100, 48000):
        for encoding in ("s16le", "f32le"):
            events = speak(stub, "Hi.", f"merchant/rate-{rate}-{encoding}", sample_rate=rate, encoding=encoding)
            pcm, start, end = check_stream(events)
            assert start.format.sample_rate_hz == rate
            assert start.format.encoding == (pb.PCM_F32LE if encoding == "f32le" else pb.PCM_S16LE)
            lengths[rate, encoding] = end.total_samples
    native = lengths[22050, "s16le"]
    for (rate, _), n in lengths.items():
        assert abs(n - round(native * rate / 22050)) <= 1, (rate, n, native)


def error_of(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        list(call)  # type: ignore[call-overload]
    return info.value


@pytest.mark.parametrize(
    ("request_kw", "code", "fragment"),
    [
        ({"text": SHORT, "character": "dragon"}, grpc.StatusCode.NOT_FOUND, "'dragon'"),
        ({"text": SHORT, "character": "guard/"}, grpc.StatusCode.INVALID_ARGUMENT, "malformed character id"),
        ({"text": "   "}, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ({"text": "word " * 61}, grpc.StatusCode.INVALID_ARGUMENT, "305 bytes"),
        ({"text": "!!! ???"}, grpc.StatusCode.INVALID_ARGUMENT, "'!!! ???'"),
        ({"text": SHORT, "sample_rate": 8000}, grpc.StatusCode.INVALID_ARGUMENT, "8000"),
        ({"text": SHORT, "speed": 5.0}, grpc.StatusCode.INVALID_ARGUMENT, "speed=5"),
        ({"text": SHORT, "pitch_semitones": -30.0}, grpc.StatusCode.INVALID_ARGUMENT, "pitch_semitones=-30"),
        ({"text": SHORT, "formant": 3.0}, grpc.StatusCode.INVALID_ARGUMENT, "formant=3"),
    ],
)
def test_speak_errors(stub: pb_grpc.NpcVoiceStub, request_kw: dict, code: grpc.StatusCode, fragment: str) -> None:
    err = error_of(stub.Speak(speak_request(**request_kw)))
    assert err.code() == code and fragment in err.details(), (err.code(), err.details())


def test_bad_encoding_and_bad_state_bytes(stub: pb_grpc.NpcVoiceStub) -> None:
    req = pb.SpeakRequest(text=SHORT, format=pb.AudioFormat(encoding=7))  # type: ignore[arg-type]
    err = error_of(stub.Speak(req))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "encoding 7" in err.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.ImportCharacterState(pb.ImportCharacterStateRequest(character="guard/imp", state=b"not a state"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        stub.ExportCharacterState(pb.ExportCharacterStateRequest(character="nobody"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_deadline_exceeded_frees_the_slot(stub: pb_grpc.NpcVoiceStub) -> None:
    call = stub.Speak(speak_request(LONG, "guard/deadline"), timeout=0.3)
    err = error_of(call)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stats = wait_idle(stub)
    assert (stats.slots_in_use, stats.active_streams) == (0, 0)


def test_disconnect_mid_stream_frees_the_slot(stub: pb_grpc.NpcVoiceStub) -> None:
    call = stub.Speak(speak_request(LONG, "guard/gone"))
    for event in call:
        if event.HasField("audio"):
            break
    assert stub.GetStats(pb.GetStatsRequest()).active_streams >= 1
    call.cancel()  # the client goes away
    stats = wait_idle(stub)
    assert (stats.slots_in_use, stats.active_streams) == (0, 0)


def test_cancel_mid_line_stops_quickly_with_a_fade(stub: pb_grpc.NpcVoiceStub) -> None:
    """Two fresh instances of one character speak the same line: identical samples until the
    cancel takes effect, so the first differing sample marks it; after it only the fade."""
    full = collect(speak(stub, LONG, "merchant/full", encoding="f32le")).pcm
    call = stub.Speak(speak_request(LONG, "merchant/cancel", encoding="f32le"))
    events = []
    for event in call:
        events.append(event)
        if event.HasField("audio") and event.audio.sample_offset > 0:
            break
    resp = stub.Cancel(pb.CancelRequest(character="merchant/cancel"))
    events.extend(call)
    pcm, _, end = check_stream(events)
    assert end.reason == pb.END_REASON_CANCELLED
    assert resp.cancelled and resp.samples_produced == end.total_samples
    assert 0 < len(pcm) < len(full), "cancel must cut the line short"
    differs = np.flatnonzero(np.abs(pcm - full[: len(pcm)]) > 1e-4)  # the fade starts here
    took_effect = int(differs[0]) if len(differs) else len(pcm)
    assert len(pcm) - took_effect <= 0.050 * 22050, (len(pcm), took_effect)  # stops within 50 ms of audio
    tail = np.abs(pcm[-int(0.002 * 22050) :])  # last 2 ms: faded to ~0, no click
    before = np.abs(full[len(pcm) - len(tail) : len(pcm)])
    assert tail.max() <= 0.1 * max(before.max(), 1e-3), (tail.max(), before.max())
    assert np.abs(pcm[-1]) < 1e-3
    assert stub.Cancel(pb.CancelRequest(character="merchant/cancel")).cancelled is False


def test_export_import_round_trip_and_identical_continuation(stub: pb_grpc.NpcVoiceStub) -> None:
    speak(stub, "The first line warms the state.", "merchant/a")
    state = stub.ExportCharacterState(pb.ExportCharacterStateRequest(character="merchant/a"))
    assert state.state and state.format_version >= 1
    stub.ImportCharacterState(pb.ImportCharacterStateRequest(character="merchant/b", state=state.state))
    again = stub.ExportCharacterState(pb.ExportCharacterStateRequest(character="merchant/b"))
    assert again.state == state.state
    a = collect(speak(stub, "And the next one continues.", "merchant/a", encoding="f32le"))
    b = collect(speak(stub, "And the next one continues.", "merchant/b", encoding="f32le"))
    assert len(a.pcm) == len(b.pcm) and np.array_equal(a.pcm, b.pcm)
    fresh = collect(speak(stub, "And the next one continues.", "merchant/fresh", encoding="f32le"))
    assert not np.array_equal(fresh.pcm, a.pcm), "state must matter, or this test proves nothing"
    stub.ResetCharacter(pb.ResetCharacterRequest(character="merchant/a"))
    reset = collect(speak(stub, "And the next one continues.", "merchant/a", encoding="f32le"))
    assert np.array_equal(reset.pcm, fresh.pcm)


def test_list_characters_voices_stats(stub: pb_grpc.NpcVoiceStub) -> None:
    chars = stub.ListCharacters(pb.ListCharactersRequest())
    assert chars.default_character == "guard"
    by_name = {c.name: c for c in chars.characters}
    assert set(by_name) == {"guard", "merchant", "goblin"}
    assert by_name["guard"].pitch_semitones == -3 and by_name["guard"].description == "test guard"
    assert by_name["goblin"].default_format.sample_rate_hz == 16000
    voices = {v.name: v for v in stub.ListVoices(pb.ListVoicesRequest()).voices}
    assert set(voices) == {"tiny", "tiny2"} and voices["tiny"].native_sample_rate_hz == 22050
    assert voices["tiny"].parameters > 0 and voices["tiny2"].checkpoint == "tiny:1"
    stats = stub.GetStats(pb.GetStatsRequest())
    assert stats.slots_total == 2 * 8 and stats.device == "cpu"  # one pool per voice, slot 0 scratch


def test_health_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "npc_voice.v1.NpcVoice"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"npc_voice.v1.NpcVoice", "grpc.health.v1.Health"} <= names


def test_concurrent_lines_complete_or_are_rejected(daemon: DaemonThread, stub: pb_grpc.NpcVoiceStub) -> None:
    """200 lines at once against 8 slots: each completes or gets RESOURCE_EXHAUSTED; slots drain."""

    async def one(client: pb_grpc.NpcVoiceStub, i: int) -> str:
        try:
            events = [e async for e in client.Speak(speak_request("Hi there.", f"guard/crowd-{i}"))]
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            return "rejected"
        check_stream(events)
        assert events[-1].end.reason == pb.END_REASON_COMPLETED
        return "completed"

    async def crowd() -> list[str]:
        async with grpc.aio.insecure_channel(daemon.address) as ch:
            client = pb_grpc.NpcVoiceStub(ch)
            return await asyncio.gather(*(one(client, i) for i in range(200)))

    before = stub.GetStats(pb.GetStatsRequest())
    outcomes = asyncio.run(crowd())
    assert len(outcomes) == 200 and outcomes.count("completed") >= 8
    stats = wait_idle(stub)
    assert (stats.slots_in_use, stats.active_streams) == (0, 0)
    assert stats.lines_rejected - before.lines_rejected == outcomes.count("rejected")


def test_resource_exhausted_with_one_slot(tmp_path: Path) -> None:
    d = start_daemon(
        tmp_path, TINY_CONFIG.replace("slots: 9", "slots: 2").replace("max_queue_wait_s: 1.0", "max_queue_wait_s: 0.2")
    )
    try:
        with grpc.insecure_channel(d.address) as ch:
            stub = pb_grpc.NpcVoiceStub(ch)
            busy = stub.Speak(speak_request(LONG, "guard/one"))
            next(iter(busy))  # StreamStart: the only slot is taken
            err = error_of(stub.Speak(speak_request(SHORT, "merchant/two")))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            busy.cancel()
            stats = wait_idle(stub)
            assert (stats.slots_in_use, stats.slots_total, stats.lines_rejected) == (0, 2, 1)  # 1 per voice
    finally:
        d.stop()


def test_hot_reload_swaps_characters_and_keeps_old_on_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = start_daemon(tmp_path, watch_interval_s=0.05)
    path = tmp_path / "voices.yaml"

    def names(stub: pb_grpc.NpcVoiceStub) -> set[str]:
        return {c.name for c in stub.ListCharacters(pb.ListCharactersRequest()).characters}

    def rewrite(text: str) -> None:
        before = path.stat().st_mtime_ns
        path.write_text(text, encoding="utf-8")
        os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))  # coarse-mtime filesystems

    try:
        with grpc.insecure_channel(d.address) as ch:
            stub = pb_grpc.NpcVoiceStub(ch)
            assert "witch" not in names(stub)
            rewrite(TINY_CONFIG.replace("  goblin:", "  witch: {voice: tiny, pitch: 4, breathiness: 0.6}\n  goblin:"))
            for _ in range(600):  # bounded wait for the watcher (not a timing assertion)
                if "witch" in names(stub):
                    break
                time.sleep(0.05)
            assert "witch" in names(stub)
            check_stream(speak(stub, SHORT, "witch/1"))
            generation = d.daemon.store.generation if d.daemon.store else -1
            rewrite("characters: [broken")
            for _ in range(600):
                if "reload rejected" in caplog.text:
                    break
                time.sleep(0.05)
            assert "reload rejected" in caplog.text and "invalid YAML" in caplog.text
            assert "witch" in names(stub) and d.daemon.store is not None
            assert d.daemon.store.generation == generation  # rejected, old configuration kept
            check_stream(speak(stub, SHORT, "witch/2"))
    finally:
        d.stop()


def test_overrides_reach_the_voice(stub: pb_grpc.NpcVoiceStub) -> None:
    """Fresh instances, same line: volume scales the samples; pitch changes them, not the timing."""
    full = collect(speak(stub, SHORT, "guard/ov-1", encoding="f32le")).pcm
    half = collect(speak(stub, SHORT, "guard/ov-2", encoding="f32le", volume=0.5)).pcm
    assert len(half) == len(full) and np.abs(full).max() > 0
    np.testing.assert_allclose(half, 0.5 * full, atol=1e-5)
    high = collect(speak(stub, SHORT, "guard/ov-3", encoding="f32le", pitch_semitones=5.0)).pcm
    assert len(high) == len(full) and not np.allclose(high, full, atol=1e-3)
    fast = collect(speak(stub, SHORT, "guard/ov-4", encoding="f32le", speed=2.0)).pcm
    assert len(fast) < len(full)


def test_a_draining_daemon_refuses_new_calls_with_unavailable_and_still_answers_health(tmp_path: Path) -> None:
    """Shutdown: new calls get a retryable UNAVAILABLE from the drain gate while the speaking call
    goes on and ends with StreamEnd; health checks still answer (NOT_SERVING), not refused."""
    d = start_daemon(tmp_path)
    stopping = None
    try:
        with grpc.insecure_channel(d.address) as ch:
            stub = pb_grpc.NpcVoiceStub(ch)
            speaking = stub.Speak(speak_request(LONG, "guard/drain"), timeout=60)
            first = next(iter(speaking))
            assert first.HasField("start")
            stopping = asyncio.run_coroutine_threadsafe(d.daemon.stop(3.0), d.loop)
            refused = None
            for _ in range(200):
                try:
                    stub.ListCharacters(pb.ListCharactersRequest(), timeout=5)
                except grpc.RpcError as e:
                    refused = e
                    break
                time.sleep(0.01)
            assert refused is not None
            assert refused.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in (refused.details() or "")
            check = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
            rest = list(speaking)
            _, _, end = check_stream([first, *rest])
            assert end.reason in (pb.END_REASON_COMPLETED, pb.END_REASON_CANCELLED)
            stopping.result(timeout=30)
    finally:
        if stopping is not None:
            stopping.result(timeout=30)
        d.stop()
