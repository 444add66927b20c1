"""The engine with the real tiny voice, the real frontend and the real engine thread.

The reference for "the engine adds nothing" is a plain loop over the model: prepare the line,
step it K frames at a time on one pool row (the last chunk padded with silence_cond and
trimmed), carrying that row's state from line to line.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from npc_voice.engine import (
    AudioEvent,
    BusyPolicy,
    CapacityError,
    EndEvent,
    Engine,
    EngineConfig,
    EngineStats,
    LineRequest,
    MarkEvent,
    Stream,
    UnknownVoiceError,
    VoiceControls,
)
from npc_voice.engine.api import controls_row
from npc_voice.engine.core import CATCH_UP_MARGIN_S
from npc_voice.engine.request import Request, RequestStatus
from npc_voice.frontend import text_to_phonemes
from npc_voice.model import tiny_voice
from npc_voice.model.api import TextError, VoiceModel
from npc_voice.model.voice import DEFAULT_CONTROLS

K = 4
FREE_RUN = 1e9  # lookahead_ms: generate as fast as the CPU allows (no real-time pacing)
LINE = "Halt! Who goes there?"
LINE2 = "Move along, citizen."
LONG = "The old bridge to the north washed away in the spring floods, so you will have to take the mountain pass."
_ids = itertools.count()


@pytest.fixture(scope="module")
def voice() -> VoiceModel:
    return tiny_voice(0)


@pytest.fixture
def make_engine(voice: VoiceModel) -> Iterator:  # type: ignore[type-arg]
    engines: list[Engine] = []

    def make(**kw: float) -> Engine:
        cfg = {"slots": 8, "frames_per_tick": K, "threads": 1, "lookahead_ms": FREE_RUN, "max_queue_wait_s": 5.0}
        cfg.update(kw)
        engine = Engine({"tiny": voice}, EngineConfig(**cfg))  # type: ignore[arg-type]
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def speak(engine: Engine, character: str, text: str, rate: int = 22050, **controls: float) -> Stream:
    req = LineRequest(character, "tiny", text, VoiceControls(**controls), {}, rate, f"req-{next(_ids)}")
    return engine.speak(req)


def settled(engine: Engine, done: Callable[[EngineStats], bool], timeout: float = 5.0) -> EngineStats:
    """The engine's stats once ``done`` holds for them (they are published after each round)."""
    deadline = time.monotonic() + timeout
    while not done(stats := engine.stats()):
        assert time.monotonic() < deadline, f"engine did not settle: {stats}"
        time.sleep(0.005)
    return stats


def collect(stream: Stream) -> tuple[list[MarkEvent | AudioEvent | EndEvent], np.ndarray, EndEvent]:
    events = list(stream.events_sync(timeout=60))
    audio = [e for e in events if isinstance(e, AudioEvent)]
    end = events[-1]
    assert isinstance(end, EndEvent)
    offset = 0
    for e in audio:  # contiguous sample clock
        assert e.sample_offset == offset
        offset += len(e.pcm)
    assert end.total_samples == offset
    pcm = np.concatenate([e.pcm for e in audio]) if audio else np.zeros(0, np.float32)
    return events, pcm, end


def direct_render(model: VoiceModel, texts: list[str], controls: tuple[float, ...] = DEFAULT_CONTROLS
                  ) -> np.ndarray:
    """The lines back to back on one fresh state row, straight through the model."""
    state = {n: torch.zeros((2, *s.shape), dtype=s.dtype) for n, s in model.state_spec().items()}
    slots = torch.tensor([1])
    ctl = torch.tensor([controls], dtype=torch.float32)
    out = []
    for text in texts:
        line = model.prepare(text_to_phonemes(text, {}), speed=1.0)
        n = line.n_frames
        cond = torch.cat([line.cond, model.silence_cond().expand(-n % K, -1)])
        for t in range(0, n, K):
            pcm = model.step(state, slots, cond[None, t : t + K], ctl)[0]
            out.append(pcm[: min(K, n - t) * model.hop].numpy())
    return np.concatenate(out)


def assert_same_audio(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)  # batch composition changes float rounding
    assert float(np.abs(a).max()) > 1e-4  # not silence: the comparison means something


def test_a_line_equals_rendering_it_directly(make_engine, voice: VoiceModel) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    _, pcm, end = collect(speak(engine, "guard", LINE))
    assert end.reason == "completed"
    assert_same_audio(pcm, direct_render(voice, [LINE]))
    # the character keeps its state: the next line continues it
    _, pcm2, _ = collect(speak(engine, "guard", LINE2))
    assert_same_audio(np.concatenate([pcm, pcm2]), direct_render(voice, [LINE, LINE2]))
    stats = engine.stats()
    assert stats.lines_completed == 2 and stats.slots_in_use == 0 and stats.characters_known == 1


def test_controls_reach_the_model(make_engine, voice: VoiceModel) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    _, pcm, _ = collect(speak(engine, "giant", LINE, pitch_semitones=-12.0, volume=0.5, formant=0.8))
    assert_same_audio(pcm, direct_render(voice, [LINE], (0.5, 0.8, 0.0, 0.5, 1.0, 0.0)))
    _, pcm, _ = collect(speak(engine, "ghost", LINE, style="whisper"))
    assert_same_audio(pcm, direct_render(voice, [LINE], controls_row(VoiceControls(style="whisper"))))


def test_two_streams_interleaved_equal_each_alone(make_engine, voice: VoiceModel) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(lookahead_ms=100.0)  # paced: the two streams share ticks
    a = engine.open_stream("a", "tiny", VoiceControls(), {}, 22050, "a")
    b = engine.open_stream("b", "tiny", VoiceControls(), {}, 22050, "b")
    a.say(LINE)
    b.say(LINE2)
    b.say(LINE)  # two lines on one continuous clock
    a.end_input()
    b.end_input()
    _, pcm_a, _ = collect(a)
    _, pcm_b, _ = collect(b)
    assert_same_audio(pcm_a, direct_render(voice, [LINE]))
    assert_same_audio(pcm_b, direct_render(voice, [LINE2, LINE]))


def test_same_character_queues_behind_itself(make_engine, voice: VoiceModel) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    first, second = speak(engine, "merchant", LINE), speak(engine, "merchant", LINE2)
    _, pcm2, _ = collect(second)
    _, pcm1, _ = collect(first)
    assert_same_audio(np.concatenate([pcm1, pcm2]), direct_render(voice, [LINE, LINE2]))


def test_export_import_round_trip_and_identical_continuation(make_engine, voice: VoiceModel) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    collect(speak(engine, "hero", LINE))
    data = engine.export_character("hero")
    engine.import_character("hero/copy", data)
    assert engine.export_character("hero/copy") == data
    _, cont_a, _ = collect(speak(engine, "hero", LINE2))
    _, cont_b, _ = collect(speak(engine, "hero/copy", LINE2))
    assert_same_audio(cont_a, cont_b)
    assert_same_audio(cont_a, direct_render(voice, [LINE, LINE2])[-len(cont_a):])
    # a fresh engine (another daemon) continues identically too
    other = make_engine()
    other.import_character("hero", data)
    _, cont_c, _ = collect(speak(other, "hero", LINE2))
    assert_same_audio(cont_c, cont_a)


def test_import_rejects_bad_bytes(make_engine) -> None:  # type: ignore[no-untyped-def]
    from npc_voice.engine import StateFormatError
    from npc_voice.engine.statefile import encode_state

    engine = make_engine()
    collect(speak(engine, "hero", LINE))
    data = engine.export_character("hero")
    with pytest.raises(StateFormatError, match="crc32"):
        engine.import_character("x", data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(StateFormatError, match="voice version"):
        engine.import_character("x", encode_state("some-other-voice", {"a": torch.zeros(1)}))
    with pytest.raises(StateFormatError, match="does not fit"):
        engine.import_character("x", encode_state("random-0", {"a": torch.zeros(1)}))


def test_reset_starts_from_a_fresh_state(make_engine, voice: VoiceModel) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    collect(speak(engine, "guard", LINE))
    engine.reset_character("guard")
    assert engine.stats().characters_known == 0
    _, pcm, _ = collect(speak(engine, "guard", LINE2))
    assert_same_audio(pcm, direct_render(voice, [LINE2]))


def test_eviction_to_host_and_back_continues_identically(make_engine, voice: VoiceModel) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(slots=2)  # one usable slot: every other character evicts the last one
    _, first, _ = collect(speak(engine, "a", LINE))
    collect(speak(engine, "b", LINE2))
    assert engine.stats().characters_evicted == 1
    _, again, _ = collect(speak(engine, "a", LINE2))
    assert_same_audio(np.concatenate([first, again]), direct_render(voice, [LINE, LINE2]))
    assert engine.stats().characters_known == 2


def test_cancel_fades_out_and_frees_the_slot(make_engine, voice: VoiceModel) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(lookahead_ms=100.0)  # paced, so the cancel lands mid-line
    stream = speak(engine, "guard", LONG)
    events = stream.events_sync(timeout=60)
    got = [next(events), next(events)]
    assert isinstance(got[0], MarkEvent) and isinstance(got[1], AudioEvent)
    was_speaking, produced = engine.cancel_character("guard")
    assert was_speaking
    got += list(events)
    end = got[-1]
    assert isinstance(end, EndEvent) and end.reason == "cancelled"
    assert produced == end.total_samples
    pcm = np.concatenate([e.pcm for e in got if isinstance(e, AudioEvent)])
    reference = direct_render(voice, [LONG])
    assert len(pcm) < len(reference)  # stopped early
    hop = voice.hop
    assert len(pcm) % hop == 0
    # everything before the last frame is the line as rendered; the last frame ramps to zero
    np.testing.assert_allclose(pcm[:-hop], reference[: len(pcm) - hop], atol=1e-4)
    last = reference[len(pcm) - hop : len(pcm)]
    ramp = pcm[-hop:] / np.where(np.abs(last) > 1e-3, last, np.nan)  # the gain applied per sample
    ramp = ramp[np.isfinite(ramp)]
    assert np.all(np.diff(ramp) <= 1e-4) and ramp[0] > 0.9 and ramp[-1] < 0.1
    assert pcm[-1] == 0.0
    stats = engine.stats()
    assert stats.slots_in_use == 0 and stats.active_streams == 0 and stats.lines_cancelled == 1
    assert engine.cancel_character("guard") == (False, 0)


def test_close_frees_the_slot_at_once(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(lookahead_ms=100.0)
    stream = speak(engine, "guard", LONG)
    events = stream.events_sync(timeout=60)
    next(events)
    assert engine.stats().slots_in_use == 1
    stream.close()  # posts to the engine thread: applied within one round (a tick at most)
    stats = settled(engine, lambda s: s.active_streams == 0)
    assert stats.slots_in_use == 0 and stats.active_streams == 0 and stats.lines_cancelled == 1
    assert stats.characters_known == 1  # the state stays, resident and evictable
    assert list(stream.events_sync(timeout=60)) == []  # no more events after close


def test_capacity_error_after_bounded_wait_then_slots_back_to_zero(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(slots=3, max_queue_wait_s=0.2)  # two usable slots
    holders = [engine.open_stream(f"h{i}", "tiny", VoiceControls(), {}, 22050, f"h{i}") for i in range(2)]
    for h in holders:  # hold both slots: input never ends
        h.say(LINE)
    extra = [speak(engine, f"x{i}", LINE) for i in range(3)]
    for s in extra:
        with pytest.raises(CapacityError, match="busy"):
            collect(s)
    stats = engine.stats()
    assert stats.lines_rejected == 3 and stats.slots_in_use == 2
    for h in holders:
        h.end_input()
        assert collect(h)[2].reason == "completed"
    assert engine.stats().slots_in_use == 0


def test_many_streams_complete_or_are_rejected(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(slots=5, max_queue_wait_s=0.05)
    streams = [speak(engine, f"npc/{i}", "Hello.") for i in range(20)]
    done = rejected = 0
    for s in streams:
        try:
            done += collect(s)[2].reason == "completed"
        except CapacityError:
            rejected += 1
    assert done + rejected == 20 and done >= 4
    stats = engine.stats()
    assert stats.slots_in_use == 0 and stats.lines_rejected == rejected and stats.lines_completed == done


def test_marks_come_first_in_order_and_within_the_samples(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    stream = engine.open_stream("guard", "tiny", VoiceControls(), {}, 22050, "m")
    stream.say(LINE)
    stream.say(LINE2)
    stream.end_input()
    events, _, end = collect(stream)
    marks = [(i, e) for i, e in enumerate(events) if isinstance(e, MarkEvent)]
    assert len(marks) == 2
    previous_end = 0
    for index, mark in marks:
        nxt = events[index + 1]
        assert isinstance(nxt, AudioEvent)  # marks come right before the audio of their line
        for kind in (mark.phonemes, mark.visemes, mark.words):
            assert kind, "no marks"
            starts = [s for _, s, _ in kind]
            assert starts == sorted(starts)
            for _, s, e in kind:
                assert nxt.sample_offset <= s <= e <= end.total_samples
        assert mark.words[0][1] >= previous_end
        previous_end = mark.words[-1][2]
    assert [w for w, _, _ in marks[0][1].words] == ["Halt", "Who", "goes", "there"]


@pytest.mark.parametrize("rate", [16000, 24000, 44100, 48000])
def test_resampled_length_and_marks_scale(make_engine, rate: int) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    events_native, native, _ = collect(speak(engine, f"n{rate}", LINE))
    events, pcm, end = collect(speak(engine, f"r{rate}", LINE, rate=rate))
    assert end.total_samples == len(pcm) == round(len(native) * rate / 22050)
    assert float(np.abs(pcm).max()) > 1e-4
    m_native, m_out = events_native[0], events[0]
    assert isinstance(m_native, MarkEvent) and isinstance(m_out, MarkEvent)
    assert [(w, round(s * rate / 22050)) for w, s, _ in m_native.words] == [(w, s) for w, s, _ in m_out.words]


def test_async_events(make_engine, voice: VoiceModel) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()

    async def consume() -> list[MarkEvent | AudioEvent | EndEvent]:
        return [e async for e in speak(engine, "guard", LINE).events()]

    events = asyncio.run(consume())
    assert isinstance(events[0], MarkEvent) and isinstance(events[-1], EndEvent)
    pcm = np.concatenate([e.pcm for e in events if isinstance(e, AudioEvent)])
    assert_same_audio(pcm, direct_render(voice, [LINE]))


def test_errors_are_raised_up_front(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    with pytest.raises(TextError):
        speak(engine, "guard", "   ")
    with pytest.raises(UnknownVoiceError, match="nope"):
        engine.open_stream("guard", "nope", VoiceControls(), {}, 22050, "r")
    with pytest.raises(ValueError, match="11025"):
        engine.open_stream("guard", "tiny", VoiceControls(), {}, 11025, "r")
    with pytest.raises(ValueError, match="speed"):
        engine.open_stream("guard", "tiny", VoiceControls(speed=0.0), {}, 22050, "r")
    assert engine.stats().slots_in_use == 0


class SlowVoice:
    """The tiny voice with a step that takes longer than the audio it makes (forces underruns)."""

    def __init__(self, inner: VoiceModel, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.sample_rate, self.hop, self.d_cond = inner.sample_rate, inner.hop, inner.d_cond
        self.device, self.name, self.version = inner.device, inner.name, inner.version
        self.prepare, self.prepare_batch = inner.prepare, inner.prepare_batch
        self.state_spec, self.silence_cond = inner.state_spec, inner.silence_cond

    def step(self, state, slots, cond, controls):  # type: ignore[no-untyped-def]
        import time

        time.sleep(self.delay_s)  # a lower bound on wall time: K frames (46 ms) take >= 150 ms
        return self.inner.step(state, slots, cond, controls)


def test_underruns_are_counted_when_generation_falls_behind(voice: VoiceModel) -> None:
    slow = SlowVoice(voice, 0.15)
    config = EngineConfig(slots=4, frames_per_tick=K, threads=1, lookahead_ms=50.0)
    with Engine({"tiny": slow}, config) as engine:  # type: ignore[dict-item]
        _, _, end = collect(speak(engine, "guard", "Hello there."))  # a few ticks of >= 150 ms for 46 ms each
        assert end.reason == "completed"
        assert engine.stats().underruns >= 1


def fake_running(engine: Engine, rows: list[tuple[float, int]], now: float) -> list[Request]:
    """Running requests with a line and the given (playback anchor, generated samples)."""
    from npc_voice.engine.speaker import Speaker

    out = []
    for i, (anchor, gen) in enumerate(rows):
        stream = Stream(character=f"c{i}", voice="tiny", controls=VoiceControls(), lexicon={},
                        sample_rate=22050, request_id=f"r{i}")
        req = Request(stream, f"c{i}", "tiny", VoiceControls(), {}, 22050, f"r{i}", BusyPolicy.QUEUE, now, 1.0,
                      status=RequestStatus.RUNNING)
        sp = Speaker(VoiceControls(), 22050, now, i + 1, 256, now, None)
        sp.line, sp.n_frames, sp.anchor_t, sp.anchor_gen, sp.gen = object(), 100, anchor, 0, gen  # type: ignore[assignment]
        req.speaker = sp
        out.append(req)
    return out


def test_a_beat_steps_every_stream_whose_audio_runs_out_within_lookahead_plus_a_tick(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(lookahead_ms=150.0, lead_slack_ms=300.0)
    core = engine.core
    now = 1000.0
    tick = core.tick_s  # K frames of audio

    def leads(*aheads: float) -> list:  # type: ignore[type-arg]
        return fake_running(engine, [(now - 1.0, int(22050 * (1.0 + a))) for a in aheads], now)

    saved = core.running
    try:
        # at a beat: +0.10 s and +(0.15 s + half a tick) run out within 0.15 s + one tick; +0.30 s does not
        c0, c1, c2 = leads(0.10, 0.15 + tick / 2, 0.15 + 2 * tick)
        core.running, core.beat_at = dict.fromkeys([c0, c1, c2]), now
        assert core._choose(now)["tiny"] == [c0, c1]
        assert core.beat_at == now  # the beat is not over until its rows have stepped
        # between beats (the next in 50 ms): nobody steps but a stream still under the lookahead
        # after that beat's step would be, once its lead is under CATCH_UP_MARGIN_S (+0.02 s: a
        # line catching up after its first piece, or behind)
        c3, c4 = leads(0.15 + tick / 2, 0.02)
        core.running, core.beat_at = dict.fromkeys([c3]), now + 0.05
        assert core._choose(now) == {}
        core.running = dict.fromkeys([c3, c4])
        assert core._choose(now)["tiny"] == [c4]
        # a beat with nothing left to step is over: the next one is a tick later
        core.running, core.beat_at = dict.fromkeys(leads(0.15 + 2 * tick)), now
        assert core._choose(now) == {} and core.beat_at == pytest.approx(now + tick)
    finally:
        core.running = saved


def test_a_catching_up_stream_rides_along_until_its_lead_runs_short(make_engine) -> None:  # type: ignore[no-untyped-def]
    """Between beats a stream still under the lookahead after the next beat (a new line after its
    first piece) does not get a model call of its own while its lead lasts: it waits for a piece
    that runs anyway (a new line's first), and the engine wakes when its lead reaches the margin."""
    engine = make_engine(lookahead_ms=150.0, lead_slack_ms=300.0)
    core = engine.core
    now = 1000.0
    saved = core.running
    try:
        [late] = fake_running(engine, [(now - 1.0, int(22050 * 1.08))], now)  # 80 ms of audio left
        core.running, core.beat_at = dict.fromkeys([late]), now + 0.09  # the beat is 90 ms away
        assert core._choose(now) == {}
        assert core._catch_up_at == pytest.approx(now + 0.08 - CATCH_UP_MARGIN_S, abs=1e-3)
        assert core._next_due(now) == pytest.approx(0.08 - CATCH_UP_MARGIN_S, abs=1e-3)
        assert core._choose(now + 0.08 - CATCH_UP_MARGIN_S + 0.001)["tiny"] == [late]  # its lead ran short
        [fresh] = fake_running(engine, [(0.0, 0)], now)
        assert fresh.speaker is not None
        fresh.speaker.anchor_t = None  # a new line: no audio yet
        core.running = dict.fromkeys([late, fresh])
        assert set(core._choose(now)["tiny"]) == {late, fresh}  # it rides along with the new line's piece
    finally:
        core.running = saved


def test_a_beats_short_piece_is_topped_up_while_more_streams_speak_than_a_piece_holds(make_engine) -> None:  # type: ignore[no-untyped-def]
    """More streams than one piece holds: a beat's short piece takes the streams due soonest
    after it (a call's fixed cost pays for them), never one that would then run more than
    lookahead + lead_slack ahead, never while a new line waits for its first audio; the beat's
    fill counts them. With no more streams than a piece holds, nothing is taken early."""
    engine = make_engine(max_batch=3, lookahead_ms=150.0, lead_slack_ms=300.0)
    core = engine.core
    now = 1000.0
    saved = core.running
    try:
        due, far_b, near_c, too_far, far_e = fake_running(
            engine, [(now - 1.0, int(22050 * (1.0 + a))) for a in (0.10, 0.30, 0.25, 0.42, 0.35)], now)
        assert 0.35 < 0.15 + 0.30 - core.tick_s < 0.42  # b, c, e may be taken early; "too_far" may not
        core.running, core.beat_at = dict.fromkeys([too_far, far_b, due, far_e, near_c]), now
        fills = len(core.fill)
        assert core._choose(now)["tiny"] == [due, near_c, far_b]
        core._close_beat()
        assert list(core.fill)[fills:] == [pytest.approx(3 / 5)]  # stepped / speaking at the beat
        due, far_b, too_far = fake_running(engine, [(now - 1.0, int(22050 * (1.0 + a))) for a in (0.1, 0.3, 0.42)],
                                           now)
        core.running, core.beat_at = dict.fromkeys([far_b, due, too_far]), now  # 3 speaking: one piece
        assert core._choose(now)["tiny"] == [due]
        due, far_b, near_c, far_e, fresh = fake_running(
            engine, [(now - 1.0, int(22050 * (1.0 + a))) for a in (0.1, 0.3, 0.25, 0.35, 0.0)], now)
        assert fresh.speaker is not None
        fresh.speaker.anchor_t = None  # a new line, no audio yet: its piece stays short
        core.running, core.beat_at = dict.fromkeys([fresh, far_b, due, far_e, near_c]), now
        assert set(core._choose(now)["tiny"]) == {fresh, due}
    finally:
        core.running = saved


def test_earliest_deadline_first_when_more_streams_are_due_than_fit(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(max_batch=2, lookahead_ms=150.0, lead_slack_ms=0.0)
    core = engine.core
    now = 1000.0
    reqs = fake_running(engine, [(990.0, 222705), (999.9, 1000), (999.0, 23153), (998.0, 55125)], now)
    # deadlines: c0 1000.1 (due), c1 999.945 (behind: due), c2 1000.05 (due), c3 1000.5 (ahead 0.5 s: not due)
    saved, core.running = core.running, dict.fromkeys(reqs)
    try:
        chosen = core._choose(now)["tiny"]
    finally:
        core.running = saved
    assert chosen == [reqs[1], reqs[2]]


def test_new_lines_beyond_max_batch_wait_for_the_next_piece(make_engine) -> None:  # type: ignore[no-untyped-def]
    """More new lines (no audio yet) than a piece holds, none due: the piece is still max_batch
    rows, the earliest opened first; the rest go in the next round."""
    engine = make_engine(max_batch=2, lookahead_ms=150.0)
    core = engine.core
    now = 1000.0
    reqs = fake_running(engine, [(0.0, 0)] * 5, now)
    for i, req in enumerate(reqs):
        sp = req.speaker
        assert sp is not None
        sp.anchor_t, sp.opened_at = None, now - 1.0 + i * 0.1  # no audio yet; opened in this order
    saved, core.running = core.running, dict.fromkeys(reversed(reqs))
    try:
        chosen = core._choose(now)["tiny"]
    finally:
        core.running = saved
    assert chosen == reqs[:2]


def test_padded_batches_as_on_cuda_change_nothing(voice: VoiceModel) -> None:
    """The CUDA path pads each batch to a power-of-two bucket with rows on scratch slot 0;
    run that padding eagerly on CPU: three streams (bucket 4) equal each alone."""
    from npc_voice.engine.device import DeviceStep

    engine = Engine({"tiny": voice}, EngineConfig(slots=8, frames_per_tick=K, threads=1, lookahead_ms=FREE_RUN))
    vr = engine.core.voices["tiny"]
    vr.step = DeviceStep(voice, vr.pool.tensors, engine.device, max_batch=7, mode="padded")  # captured at start
    with engine:
        streams = [speak(engine, f"c{i}", text) for i, text in enumerate([LINE, LINE2, "Hello."])]
        pcms = [collect(s)[1] for s in streams]
    for pcm, text in zip(pcms, [LINE, LINE2, "Hello."], strict=True):
        assert_same_audio(pcm, direct_render(voice, [text]))


def test_cancel_at_48k_ends_in_a_fade(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(lookahead_ms=100.0)
    stream = speak(engine, "guard", LONG, rate=48000)
    events = stream.events_sync(timeout=60)
    got = [next(events), next(events)]
    stream.cancel()
    got += list(events)
    end = got[-1]
    assert isinstance(end, EndEvent) and end.reason == "cancelled"
    pcm = np.concatenate([e.pcm for e in got if isinstance(e, AudioEvent)])
    assert end.total_samples == len(pcm)
    before = float(np.abs(pcm[-2000:-600]).max())  # the audio just before the fade frame
    assert before > 1e-4
    assert float(np.abs(pcm[-20:]).max()) < 0.05 * before  # the last samples ramp to ~0: no click
    assert engine.stats().slots_in_use == 0


@pytest.mark.parametrize("rate", [16000, 24000, 44100, 48000])
def test_block_resampler_equals_the_reference_resampler(rate: int) -> None:
    from npc_voice.audio.resample import StreamResampler
    from npc_voice.engine.resampler import BlockResampler

    x = np.random.default_rng(rate).standard_normal(22050).astype(np.float32) * 0.3
    ref, fast = StreamResampler(22050, rate), BlockResampler(22050, rate)
    sizes = [256, 1024, 1, 3000, 512, 7, 1024]  # odd chunks too: chunking must not matter
    bounds = np.cumsum([0, *sizes])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        want, got = ref.process(x[a:b]), fast.process(x[a:b])
        assert len(got) == len(want)
        np.testing.assert_allclose(got, want, atol=1e-5)
    want, got = ref.flush(), fast.flush()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert fast.total_out == round(bounds[-1] * rate / 22050)


class FlakyVoice(SlowVoice):
    """The tiny voice whose step raises once (a bug in the model must not hang the engine)."""

    def __init__(self, inner: VoiceModel) -> None:
        super().__init__(inner, 0.0)
        self.armed = False  # set after the engine's warm-up

    def step(self, state, slots, cond, controls):  # type: ignore[no-untyped-def]
        if self.armed:
            self.armed = False
            raise RuntimeError("boom")
        return self.inner.step(state, slots, cond, controls)


def test_a_failing_step_fails_its_streams_and_the_engine_goes_on(voice: VoiceModel) -> None:
    from npc_voice.engine import StepError

    config = EngineConfig(slots=4, frames_per_tick=K, threads=1, lookahead_ms=FREE_RUN)
    flaky = FlakyVoice(voice)
    with Engine({"tiny": flaky}, config) as engine:  # type: ignore[dict-item]
        flaky.armed = True
        with pytest.raises(StepError, match="model step failed"):
            collect(speak(engine, "guard", LINE))
        stats = engine.stats()
        assert stats.slots_in_use == 0 and stats.step_failures == 1 and stats.lines_failed == 1
        assert collect(speak(engine, "guard", LINE2))[2].reason == "completed"
        assert engine.stats().serving


def test_playback_clock_restarts_after_a_pause_for_text(voice: VoiceModel) -> None:
    """A Converse stream idle between phrases ran dry for lack of text, not by underrun."""
    from npc_voice.engine.speaker import Speaker

    line = voice.prepare(text_to_phonemes("Hi.", {}))
    sp = Speaker(VoiceControls(), 22050, 100.0, 1, voice.hop, 100.0, None)
    sp.begin_line(line, [0], 100.0)
    sp.emit(np.zeros(1024, np.float32), 4, 100.0)  # first chunk at t=100: the clock starts
    assert sp.ahead_s(100.0) == pytest.approx(1024 / 22050)
    assert sp.ahead_s(101.0) == pytest.approx(1024 / 22050 - 1.0)  # played past the end: 1 s dry
    sp.begin_line(line, [1], 101.0)  # the next phrase arrives
    assert sp.ahead_s(101.0) == 0.0 and sp.deadline() == 101.0
    assert sp.line_start == 1024  # the stream's sample clock itself is continuous


def test_step_cost_fit() -> None:
    from npc_voice.engine.cost import StepCost

    cost = StepCost()
    assert cost.fit() is None and cost.capacity(0.05) == float("inf")
    for batch in (1, 8, 2, 16, 4):
        cost.add(batch, 0.002 + 0.001 * batch)
    a, b = cost.fit()  # type: ignore[misc]
    assert a == pytest.approx(0.002) and b == pytest.approx(0.001)
    assert cost.capacity(0.042) == pytest.approx(40.0)
    assert cost.predict(64) == pytest.approx(0.066)
    assert cost.predict(64, piece=32) == pytest.approx(0.068)  # two calls, two fixed costs
    assert cost.predict(20, piece=32) == pytest.approx(0.022)


class LinearCostVoice(SlowVoice):
    """The tiny voice with a step that takes at least 10 ms per stream."""

    def step(self, state, slots, cond, controls):  # type: ignore[no-untyped-def]
        import time

        time.sleep(0.010 * len(slots))
        return self.inner.step(state, slots, cond, controls)


def test_admission_from_measured_cost(voice: VoiceModel) -> None:
    # 0.8 * 46 ms of audio per tick at >= 10 ms per stream: at most 3 streams fit, whatever the slots
    config = EngineConfig(slots=16, frames_per_tick=K, threads=1, lookahead_ms=100.0, max_queue_wait_s=0.3,
                          max_load=0.8, admit_floor=1)
    with Engine({"tiny": LinearCostVoice(voice, 0.0)}, config) as engine:  # type: ignore[dict-item]
        streams = [speak(engine, f"c{i}", LINE) for i in range(6)]  # ~1.4 s each: longer than the wait
        done = rejected = 0
        for s in streams:
            try:
                done += collect(s)[2].reason == "completed"
            except CapacityError as e:
                assert "real time" in str(e)
                rejected += 1
        assert 1 <= done <= 3 and done + rejected == 6
        assert engine.stats().slots_in_use == 0


def test_close_ends_open_streams_cancelled_with_a_fade(voice: VoiceModel) -> None:
    engine = Engine({"tiny": voice}, EngineConfig(slots=4, frames_per_tick=K, threads=1, lookahead_ms=100.0))
    engine.start()
    stream = speak(engine, "guard", LONG)
    events = stream.events_sync(timeout=60)
    got = [next(events), next(events)]
    engine.close()
    got += list(events)
    end = got[-1]
    assert isinstance(end, EndEvent) and end.reason == "cancelled"
    pcm = np.concatenate([e.pcm for e in got if isinstance(e, AudioEvent)])
    assert len(pcm) == end.total_samples and pcm[-1] == 0.0  # faded, not cut


def test_add_voices_while_running_speaks_with_the_new_voice(make_engine) -> None:  # type: ignore[no-untyped-def]
    """Hot reload can bring a new voice: it joins between ticks and renders exactly like the model."""
    engine = make_engine()
    other = tiny_voice(1)
    engine.add_voices({"tiny": engine.voices["tiny"], "other": other})  # "tiny" is the same model: left alone
    assert set(engine.voices) == {"tiny", "other"}
    req = LineRequest("hero", "other", "Good morning.", VoiceControls(), {}, 22050, "req-added")
    _, pcm, end = collect(engine.speak(req))
    assert end.reason == "completed"
    assert_same_audio(pcm, direct_render(other, ["Good morning."]))
    _, pcm_old, _ = collect(speak(engine, "guard", "Good morning."))
    assert_same_audio(pcm_old, direct_render(engine.voices["tiny"], ["Good morning."]))
    assert engine.stats().slots_in_use == 0


def test_a_reload_that_changes_a_voice_swaps_it_safely(make_engine, voice: VoiceModel) -> None:  # type: ignore[no-untyped-def]
    """The stream speaking with the old model finishes on it; the next line uses the new model
    (from a fresh state); the old pool goes once its last stream ended."""
    engine = make_engine(lookahead_ms=150.0)
    speaking = speak(engine, "guard", LINE)
    events = speaking.events_sync(timeout=60)
    got = [next(events), next(events)]  # marks, first audio: it is speaking with the old model
    new_model = tiny_voice(3)
    engine.add_voices({"tiny": new_model})
    got += list(events)
    pcm = np.concatenate([e.pcm for e in got if isinstance(e, AudioEvent)])
    assert_same_audio(pcm, direct_render(voice, [LINE]))  # finished on the old model, untouched
    _, pcm_new, end = collect(speak(engine, "guard", LINE2))
    assert end.reason == "completed"
    assert_same_audio(pcm_new, direct_render(new_model, [LINE2]))  # the new model, a fresh state
    assert engine.voices["tiny"] is new_model
    assert list(engine.core.voices) == ["tiny"]  # the replaced model's pool is gone


def test_host_cache_is_bounded_in_bytes_and_forgotten_states_are_counted(voice: VoiceModel) -> None:
    state_bytes = voice.state_bytes()  # type: ignore[attr-defined]
    config = EngineConfig(slots=2, frames_per_tick=K, threads=1, lookahead_ms=FREE_RUN,
                          host_cache_mb=2.5 * state_bytes / 1e6)  # room for 2 evicted states
    with Engine({"tiny": voice}, config) as engine:
        assert engine.core.voices["tiny"].pool.host_capacity == 2
        for i in range(5):  # one slot: each new character evicts the previous one to host memory
            assert collect(speak(engine, f"c{i}", "Hi."))[2].reason == "completed"
        stats = engine.stats()
    assert stats.characters_evicted == 2 and stats.characters_forgotten == 2 and stats.characters_known == 3


@pytest.mark.parametrize(("rate", "encoding"), [(22050, "s16le"), (16000, "s16le"), (48000, "f32le")])
def test_audio_is_encoded_for_the_wire_per_batch(make_engine, rate: int, encoding: str) -> None:  # type: ignore[no-untyped-def]
    from npc_voice.audio.pcm import encode_pcm

    engine = make_engine()
    streams = [engine.open_stream(f"w{i}", "tiny", VoiceControls(), {}, rate, f"w{i}", encoding=encoding)
               for i in range(3)]
    for s in streams:
        s.say(LINE)
        s.end_input()
    for s in streams:
        events, _, _ = collect(s)
        audio = [e for e in events if isinstance(e, AudioEvent)]
        assert audio and all(e.data == encode_pcm(e.pcm, encoding) for e in audio)  # tail included
    with pytest.raises(ValueError, match="mp3"):
        engine.open_stream("w", "tiny", VoiceControls(), {}, 22050, "w", encoding="mp3")


def test_no_new_stream_is_admitted_while_speaking_ones_are_behind(voice: VoiceModel) -> None:
    """Overload refuses new lines instead of making everyone stutter: with a step slower than
    real time the first stream falls behind, and the next one waits, then gets CapacityError."""
    config = EngineConfig(slots=4, frames_per_tick=K, threads=1, lookahead_ms=50.0, max_queue_wait_s=0.6,
                          admit_floor=1)
    with Engine({"tiny": SlowVoice(voice, 0.15)}, config) as engine:  # type: ignore[dict-item]
        first = speak(engine, "a", LONG)
        events = first.events_sync(timeout=60)
        for _ in range(4):
            next(events)  # a few ticks of 150 ms for 46 ms of audio: behind
        with pytest.raises(CapacityError, match="behind real time"):
            collect(speak(engine, "b", LINE))
        first.cancel()
        end = list(events)[-1]
        assert isinstance(end, EndEvent) and end.reason == "cancelled"


def test_admission_overhead_learns_from_busy_rounds_only(make_engine) -> None:  # type: ignore[no-untyped-def]
    """Rounds that stepped teach the overhead factor (round time / step time); the sleep between
    paced rounds is no overhead (it once made admission refuse at a third of capacity)."""
    core = make_engine().core
    core.overhead = 1.0
    for _ in range(200):
        core._round_step_s = 0.010
        core.learn_round(0.012)  # a round of 12 ms around a 10 ms step
        core.learn_round(0.001)  # a round that stepped nothing: ignored
    assert core.overhead == pytest.approx(1.2, abs=0.01)
