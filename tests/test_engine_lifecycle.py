"""Engine core v2: ownership, the request lifecycle, fault isolation and busy-character policies.

Real tiny voice, real frontend, real engine thread. Faults are injected by wrapping the voice
(its step or prepare raises or calls back), never by patching the engine.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from npc_voice.engine import (
    AudioEvent,
    BusyError,
    BusyPolicy,
    CapacityError,
    EndEvent,
    Engine,
    EngineConfig,
    EngineStats,
    LineRequest,
    StepError,
    Stream,
    VoiceControls,
)
from npc_voice.model import tiny_voice
from npc_voice.model.api import TextError, VoiceModel
from tests.test_engine import LINE, LINE2, LONG, assert_same_audio, collect, direct_render, settled

K = 4


@pytest.fixture(scope="module")
def voice() -> VoiceModel:
    return tiny_voice(0)


class WrappedVoice:
    """The tiny voice with hooks: ``on_step(batch)`` runs inside the step (on the engine thread),
    ``poison`` makes prepare fail for lines whose text contains it."""

    def __init__(self, inner: VoiceModel) -> None:
        self.inner = inner
        self.sample_rate, self.hop, self.d_cond = inner.sample_rate, inner.hop, inner.d_cond
        self.device, self.name, self.version = inner.device, inner.name, inner.version
        self.state_spec, self.silence_cond = inner.state_spec, inner.silence_cond
        self.on_step: Callable[[int], None] | None = None
        self.poison = "\x00never"
        self.steps = 0

    def prepare(self, phonemes, speed=1.0):  # type: ignore[no-untyped-def]
        if self.poison in phonemes.text:
            raise RuntimeError("injected prepare failure")
        return self.inner.prepare(phonemes, speed=speed)

    def prepare_batch(self, phonemes, speeds):  # type: ignore[no-untyped-def]
        if any(self.poison in p.text for p in phonemes):
            raise RuntimeError("injected prepare failure")
        return self.inner.prepare_batch(phonemes, speeds=speeds)

    def step(self, state, slots, cond, controls):  # type: ignore[no-untyped-def]
        self.steps += 1
        if self.on_step is not None:
            self.on_step(len(slots))
        return self.inner.step(state, slots, cond, controls)


@pytest.fixture
def wrapped(voice: VoiceModel) -> Iterator[tuple[Engine, WrappedVoice]]:
    w = WrappedVoice(voice)
    config = EngineConfig(slots=12, frames_per_tick=K, threads=1, lookahead_ms=1e9, max_queue_wait_s=5.0,
                          max_load=0.0)
    engine = Engine({"tiny": w}, config)  # type: ignore[dict-item]
    engine.start()
    yield engine, w
    engine.close()


def speak(engine: Engine, character: str, text: str, busy: BusyPolicy = BusyPolicy.QUEUE) -> Stream:
    return engine.speak(LineRequest(character, "tiny", text, VoiceControls(), {}, 22050, f"{character}-{text[:8]}",
                                    busy))


def outcome(stream: Stream) -> str:
    try:
        return collect(stream)[2].reason
    except CapacityError:
        return "rejected"
    except (StepError, TextError):
        return "failed"


def assert_counters_add_up(stats: EngineStats) -> None:
    assert stats.active_streams == 0 and stats.streams_waiting == 0 and stats.slots_in_use == 0
    assert stats.lines_opened == (stats.lines_completed + stats.lines_cancelled + stats.lines_interrupted
                                  + stats.lines_rejected + stats.lines_failed), stats


def test_a_stream_closed_while_its_first_tick_renders_harms_no_one(
    wrapped: tuple[Engine, WrappedVoice], voice: VoiceModel
) -> None:
    """The old race: a gRPC thread closed a stream while the engine thread rendered it, and the
    engine then failed every active stream. Now close() only posts a command: reproduce it
    deterministically (close from another thread inside the first step) and check the others."""
    engine, w = wrapped
    texts = [LINE, LINE2, "Hello there.", "Good morning."]
    streams = [speak(engine, f"npc{i}", t) for i, t in enumerate(texts)]
    victim = speak(engine, "victim", LONG)
    closed = threading.Event()

    def close_mid_step(batch: int) -> None:
        if batch == 5 and not closed.is_set():  # the first step with everyone in it
            t = threading.Thread(target=victim.close)
            t.start()
            t.join(5)
            assert not t.is_alive(), "close() blocked on the engine thread"
            closed.set()

    w.on_step = close_mid_step
    pcms = [collect(s)[1] for s in streams]
    assert closed.is_set()
    for pcm, text in zip(pcms, texts, strict=True):
        assert_same_audio(pcm, direct_render(voice, [text]))  # untouched, sample for sample
    stats = settled(engine, lambda s: s.active_streams == 0)
    assert stats.lines_completed == 4 and stats.lines_cancelled == 1 and stats.lines_failed == 0
    assert victim.wait_ended(1) is not None and victim.wait_ended(1).reason == "cancelled"  # type: ignore[union-attr]
    assert_counters_add_up(stats)


def test_closes_and_cancels_from_many_threads_during_ticks_keep_every_other_stream_whole(
    wrapped: tuple[Engine, WrappedVoice], voice: VoiceModel
) -> None:
    engine, _ = wrapped
    steady = [speak(engine, f"steady{i}", LINE) for i in range(3)]
    churn = [speak(engine, f"churn{i}", LONG) for i in range(8)]

    def drop(i: int, s: Stream) -> None:
        time.sleep(0.003 * i)
        (s.cancel if i % 2 else s.close)()

    threads = [threading.Thread(target=drop, args=(i, s)) for i, s in enumerate(churn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in steady:
        assert_same_audio(collect(s)[1], direct_render(voice, [LINE]))
    stats = settled(engine, lambda s: s.active_streams == 0)
    assert stats.lines_completed == 3 and stats.lines_cancelled == 8
    assert_counters_add_up(stats)


def test_counters_add_up_over_every_outcome(wrapped: tuple[Engine, WrappedVoice]) -> None:
    engine, w = wrapped
    w.poison = "poison"
    outcomes = {"completed": speak(engine, "a", LINE)}
    with pytest.raises(StepError):  # prepared on the caller's thread: it fails right there
        speak(engine, "b", "A poison line.")
    holder = speak(engine, "c", LONG)
    next(iter(holder.events_sync(timeout=30)))  # c is speaking
    outcomes["rejected"] = speak(engine, "c", LINE2, BusyPolicy.REJECT)
    outcomes["interrupted"] = holder
    barge = speak(engine, "c", LINE2, BusyPolicy.INTERRUPT)
    cancelled = speak(engine, "d", LONG)
    cancelled.cancel()
    got = {want: outcome(s) for want, s in outcomes.items()} | {"failed": "failed"}
    assert got == {k: k for k in got}
    assert outcome(barge) == "completed" and outcome(cancelled) == "cancelled"
    stats = settled(engine, lambda s: s.active_streams == 0 and s.streams_waiting == 0)
    assert_counters_add_up(stats)
    assert (stats.lines_failed, stats.lines_interrupted, stats.lines_rejected) == (1, 1, 1)


def test_a_line_that_fails_to_prepare_fails_only_its_stream(
    wrapped: tuple[Engine, WrappedVoice], voice: VoiceModel
) -> None:
    engine, w = wrapped
    w.poison = "poison"
    good = [speak(engine, f"g{i}", LINE) for i in range(3)]
    with pytest.raises(StepError, match="prepare"):
        speak(engine, "bad", "The poison line.")
    for s in good:
        assert_same_audio(collect(s)[1], direct_render(voice, [LINE]))


def test_a_failing_step_fails_its_batch_backs_off_and_reports_not_serving(wrapped: tuple[Engine, WrappedVoice]) -> None:
    engine, w = wrapped
    failures = {"left": 3}

    def fail(batch: int) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("injected step failure")

    w.on_step = fail
    t0 = time.monotonic()
    for i in range(3):
        with pytest.raises(StepError):
            collect(speak(engine, f"f{i}", LINE))
    stats = engine.stats()
    assert stats.step_failures == 3 and not stats.serving  # health NOT_SERVING until a step works
    assert time.monotonic() - t0 >= 0.05 + 0.1  # backed off (0.05 s, then 0.1 s): no hot loop
    assert collect(speak(engine, "ok", LINE))[2].reason == "completed"
    stats = settled(engine, lambda s: s.active_streams == 0)
    assert stats.serving and stats.lines_failed == 3
    assert_counters_add_up(stats)


def test_queue_policy_bounds_how_many_wait_and_for_how_long(voice: VoiceModel) -> None:
    config = EngineConfig(slots=8, frames_per_tick=K, threads=1, lookahead_ms=100.0, max_queue_wait_s=0.5,
                          max_waiting_per_character=2, max_load=0.0)
    with Engine({"tiny": voice}, config) as engine:
        t0 = time.monotonic()
        streams = [speak(engine, "king", LONG) for _ in range(6)]  # real time: LONG is ~6 s of audio
        results = [outcome(s) for s in streams]
        assert results[0] == "completed"
        assert results[3:] == ["rejected"] * 3  # beyond 2 waiting: refused at once
        assert results[1:3] == ["rejected"] * 2  # waited 0.5 s behind a 6 s line: refused
        assert time.monotonic() - t0 < 15.0
        with pytest.raises(BusyError, match="max_waiting_per_character"):
            collect(streams[4])
        assert_counters_add_up(settled(engine, lambda s: s.active_streams == 0))


def test_interrupt_fades_the_current_line_and_continues_the_state(wrapped: tuple[Engine, WrappedVoice]) -> None:
    engine, _ = wrapped
    first = speak(engine, "hero", LONG)
    events = first.events_sync(timeout=30)
    got = [next(events), next(events), next(events)]
    second = speak(engine, "hero", LINE2, BusyPolicy.INTERRUPT)
    got += list(events)
    end = got[-1]
    assert isinstance(end, EndEvent) and end.reason == "interrupted"
    pcm = np.concatenate([e.pcm for e in got if isinstance(e, AudioEvent)])
    assert len(pcm) == end.total_samples and abs(float(pcm[-1])) < 1e-3  # faded, not cut
    assert collect(second)[2].reason == "completed"
    stats = settled(engine, lambda s: s.active_streams == 0)
    assert stats.lines_interrupted == 1
    assert stats.characters_known == 1  # one state, carried from the first line into the second


def test_reject_policy_refuses_a_busy_character_at_once(wrapped: tuple[Engine, WrappedVoice]) -> None:
    engine, _ = wrapped
    first = speak(engine, "smith", LONG)
    next(iter(first.events_sync(timeout=30)))
    t0 = time.monotonic()
    with pytest.raises(BusyError, match="busy"):
        collect(speak(engine, "smith", LINE, BusyPolicy.REJECT))
    assert time.monotonic() - t0 < 1.0
    assert collect(speak(engine, "other", LINE, BusyPolicy.REJECT))[2].reason == "completed"
    first.cancel()
    assert collect(first)[2].reason == "cancelled"


def test_batches_are_lockstep_under_steady_load(voice: VoiceModel) -> None:
    """Real-time pacing with staggered starts: every tick steps (nearly) every speaking stream."""
    config = EngineConfig(slots=12, frames_per_tick=K, threads=1, lookahead_ms=150.0, max_load=0.0)
    with Engine({"tiny": voice}, config) as engine:
        streams = []
        for i in range(6):
            streams.append(speak(engine, f"s{i}", LONG))
            time.sleep(0.05)
        for s in streams:
            assert collect(s)[2].reason == "completed"
        stats = engine.stats()
    assert stats.batch_fill >= 0.9, stats.batch_fill


def test_a_long_line_is_split_into_consecutive_lines_with_continuous_audio_and_marks(voice: VoiceModel) -> None:
    from npc_voice.engine.stream import split_phonemes
    from npc_voice.frontend import text_to_phonemes

    text = " ".join([LONG] * 3)
    whole = text_to_phonemes(text, {})
    pieces = split_phonemes(whole, 60)
    assert len(pieces) >= len(whole.symbols) // 60 and all(len(p.symbols) <= 60 for p in pieces)
    assert sum(len(p.symbols) for p in pieces) == len(whole.symbols)  # nothing lost or repeated
    assert [w for p in pieces for w in p.words] == list(whole.words)  # words in order, none split here
    assert all(p.symbols[-1] in ".!?,;: " for p in pieces[:-1])  # cut at boundaries
    config = EngineConfig(slots=4, frames_per_tick=K, threads=1, lookahead_ms=1e9, max_line_symbols=60, max_load=0.0)
    with Engine({"tiny": voice}, config) as engine:
        events, pcm, end = collect(speak(engine, "bard", text))
    marks = [e for e in events if not isinstance(e, (AudioEvent, EndEvent))]
    assert len(marks) == len(pieces) and end.reason == "completed"
    words = [w for m in marks for w in m.words]  # type: ignore[union-attr]
    assert [w[0] for w in words] == list(whole.words)
    starts = [w[1] for w in words]
    assert starts == sorted(starts) and starts[-1] < len(pcm) == end.total_samples  # one continuous clock


def test_a_new_stream_gets_a_first_piece_at_once_then_joins_the_others_beat(
    voice: VoiceModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paced streams ahead of their clocks do not make a newcomer wait for their beat: its first
    piece runs at once and small (FIRST_TICK_ROWS), it catches up to the lookahead, and from then
    on it steps in the others' beat: every piece holds all four streams."""
    from npc_voice.engine import core

    monkeypatch.setattr(core, "FIRST_TICK_ROWS", 2)
    w = WrappedVoice(voice)
    batches: list[int] = []
    config = EngineConfig(slots=12, frames_per_tick=K, threads=1, lookahead_ms=300.0, max_load=0.0)
    with Engine({"tiny": w}, config) as engine:  # type: ignore[dict-item]
        steady = [speak(engine, f"steady{i}", LONG) for i in range(3)]
        for s in steady:
            next(s.events_sync(timeout=10))  # speaking, then pacing: ~300 ms ahead
        time.sleep(0.5)
        w.on_step = batches.append
        late = speak(engine, "late", LINE)
        assert collect(late)[2].reason == "completed"
        w.on_step = None
        for s in steady:
            s.cancel()
            s.wait_ended(10)
    assert batches[0] < 4, batches  # at once: not the whole beat
    assert len(batches) > 10 and batches[-8:] == [4] * 8, batches  # then one phase with the others


def test_max_batch_auto_is_a_32_row_piece_per_chunk_on_cpu_and_every_slot_on_gpu() -> None:
    import torch

    from npc_voice.engine.core import resolve_max_batch, resolve_step_threads
    from npc_voice.engine.split import CHUNKS_PER_THREAD, chunk_bounds, default_step_threads

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_max_batch(EngineConfig(slots=256, step_threads=1), cpu) == 32
    assert resolve_max_batch(EngineConfig(slots=256, step_threads=2), cpu) == 32 * 2 * CHUNKS_PER_THREAD
    threads = default_step_threads()
    auto = resolve_max_batch(EngineConfig(slots=256), cpu)
    assert auto == (32 if threads < 2 else 32 * threads * CHUNKS_PER_THREAD)
    assert max(hi - lo for lo, hi in chunk_bounds(auto, threads)) == 32  # a full piece: 32-row chunks
    assert resolve_max_batch(EngineConfig(slots=12, step_threads=2), cpu) == 11
    assert resolve_max_batch(EngineConfig(slots=256, step_threads=2), cuda) == 255
    assert resolve_max_batch(EngineConfig(slots=256, max_batch=100), cpu) == 100
    assert resolve_step_threads(EngineConfig(step_threads=3), cpu) == 3
    assert resolve_step_threads(EngineConfig(step_threads=3), cuda) == 1  # one CUDA graph per call


def test_a_tick_larger_than_max_batch_steps_in_full_pieces(voice: VoiceModel) -> None:
    """Five streams, max_batch 2: no model call holds more than 2 rows, every line completes, and
    batch fill counts the pieces as full (rows / min(running, max_batch)), not as 2 of 5."""
    w = WrappedVoice(voice)
    batches: list[int] = []
    w.on_step = batches.append
    config = EngineConfig(slots=8, frames_per_tick=K, threads=1, lookahead_ms=300.0, max_load=0.0, max_batch=2)
    with Engine({"tiny": w}, config) as engine:  # type: ignore[dict-item]
        streams = [speak(engine, f"s{i}", LINE) for i in range(5)]
        for s in streams:
            assert collect(s)[2].reason == "completed"
        fill = engine.stats().batch_fill
    assert batches and max(batches) <= 2, batches
    assert batches.count(2) > len(batches) // 2, batches  # mostly full pieces
    assert fill >= 0.9, fill
