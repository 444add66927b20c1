"""Speaker: the engine-side bookkeeping of one admitted stream (slot, line position, clocks).

Only the engine thread touches a Speaker (it belongs to a running Request). Positions are
counted in native samples (22050 Hz) for scheduling and in output samples for events.

Playback clock: the client is assumed to start playing at the first chunk and to play at
real-time rate, so at time t it has played ``anchor_gen + (t - anchor_t) * rate`` samples.
When a stream ran dry because it had nothing to say (Converse between phrases), the clock is
re-anchored at the next line's start: that gap is silence, not an underrun.
"""
from __future__ import annotations

import math
import time
from collections import deque

import numpy as np

from npc_voice.contracts import SAMPLE_RATE, Mark
from npc_voice.engine.api import AudioEvent, EndEvent, MarkEvent, VoiceControls, controls_row
from npc_voice.engine.resampler import BlockResampler
from npc_voice.model.api import PreparedLine


def make_resampler(out_rate: int) -> BlockResampler | None:
    """A streaming resampler from the native rate to ``out_rate`` (None: same rate)."""
    if out_rate == SAMPLE_RATE:
        return None
    return BlockResampler(SAMPLE_RATE, out_rate)


class Speaker:
    def __init__(
        self, controls: VoiceControls, sample_rate: int, opened_at: float, slot: int, hop: int, now: float,
        resampler: BlockResampler | None, encoding: str | None = None,
    ) -> None:
        c = controls
        self.hop = hop  # native samples per frame
        self.sample_rate = sample_rate  # output rate
        self.opened_at = opened_at  # when the stream was opened (monotonic)
        self.slot = slot
        # columns as npc_voice.contracts.CONTROL_*: pitch factor, formant, breathiness, volume, voicing, tilt
        self.controls = controls_row(c)
        self.resampler = resampler
        self.encoding = encoding  # "s16le" | "f32le": AudioEvents carry wire bytes (encoded per batch)
        self.prepared: deque[PreparedLine] = deque()  # lines ready to start, in order
        self.line: PreparedLine | None = None  # the line being spoken
        self.pages: list[int] = []  # CondArena pages (K frames each) of the current line
        self.pos = 0  # next frame of the current line
        self.n_frames = 0  # real frames of the current line
        self.line_start = 0  # native sample (stream clock) where the current line starts
        self.marks_due = False  # the current line's MarkEvent is not sent yet
        self.gen = 0  # native samples generated on this stream
        self.out = 0  # output samples queued on this stream
        self.anchor_t: float | None = None  # playback clock anchor (None until the first chunk)
        self.anchor_gen = 0
        self.behind = False  # generated audio is behind the playback clock (underrun)
        self.fading = False  # cancelled: this tick emits one faded frame, then ends
        self.admitted_at = now
        self.first_audio_at: float | None = None
        self.due_t = math.inf  # when playback reaches the audio accounted last (AudioEvent.due_t) ...
        self.made_t = 0.0  # ... and when it was accounted

    def begin_line(self, line: PreparedLine, pages: list[int], now: float) -> None:
        self.line = line
        self.pages = pages
        self.pos = 0
        self.n_frames = line.n_frames
        self.line_start = self.gen
        self.marks_due = True
        ahead = self.ahead_s(now)
        if ahead is not None and ahead < 0.0:  # ran dry for lack of text: restart the clock
            self.anchor_t, self.anchor_gen = now, self.gen
            self.behind = False

    def page(self, k: int) -> int:
        """The arena page holding the next K frames (pos is a multiple of K while stepping)."""
        return self.pages[self.pos // k]

    def ahead_s(self, now: float) -> float | None:
        """Seconds of generated audio not yet played (negative: behind); None before audio."""
        if self.anchor_t is None:
            return None
        return (self.gen - self.anchor_gen) / SAMPLE_RATE - (now - self.anchor_t)

    def deadline(self) -> float:
        """When playback reaches the end of the generated audio (monotonic seconds)."""
        if self.anchor_t is None:
            return self.opened_at
        return self.anchor_t + (self.gen - self.anchor_gen) / SAMPLE_RATE

    def marks_event(self) -> MarkEvent:
        assert self.line is not None
        self.marks_due = False
        return MarkEvent(
            phonemes=self._marks(self.line.phonemes),
            visemes=self._marks(self.line.visemes),
            words=self._marks(self.line.words),
        )

    def cut(self, row: np.ndarray, k: int, now: float) -> tuple[list[MarkEvent | AudioEvent], np.ndarray]:
        """Account one stepped row: (the line's marks if due, its native audio to send — the real
        frames, or when cancelled one frame faded to 0). Resampling and the AudioEvent follow
        (``audio``), per batch in the engine."""
        events: list[MarkEvent | AudioEvent] = []
        if self.marks_due:
            events.append(self.marks_event())
        if self.fading:
            frames, chunk = 1, row[: self.hop] * fade(self.hop)
        else:
            frames = min(k, self.n_frames - self.pos)
            chunk = row[: frames * self.hop]
        self._account(chunk, frames, now)
        return events, chunk

    def audio(self, pcm: np.ndarray) -> AudioEvent | None:
        """The AudioEvent for ``pcm`` at the output rate (resampled if needed; may overshoot: clipped)."""
        if self.resampler is not None:
            pcm = np.clip(pcm, -1.0, 1.0)
        return self._audio(pcm)

    def emit(self, chunk: np.ndarray, frames: int, now: float) -> AudioEvent | None:
        """Account ``frames`` frames of native audio ``chunk`` and resample it."""
        self._account(chunk, frames, now)
        return self.audio(chunk if self.resampler is None else self.resampler.process(chunk))

    def _account(self, chunk: np.ndarray, frames: int, now: float) -> None:
        """``frames`` frames (``chunk``, native samples) leave the stream now: positions and the
        playback clock, which starts at the first chunk."""
        self.pos += frames
        self.due_t = self.deadline() if self.anchor_t is not None else math.inf  # where this chunk starts
        self.made_t = now
        self.gen += len(chunk)
        if self.first_audio_at is None:
            self.first_audio_at = now
            self.anchor_t, self.anchor_gen = now, 0

    def flush(self) -> AudioEvent | None:
        """The resampler's tail at the end of the stream."""
        if self.resampler is None:
            return None
        return self._audio(np.clip(self.resampler.flush(), -1.0, 1.0))

    def end_event(self, reason: str, now: float) -> EndEvent:
        opened = self.opened_at
        first = (self.first_audio_at - opened) * 1000.0 if self.first_audio_at is not None else 0.0
        return EndEvent(
            reason=reason,
            total_samples=self.out,
            queued_ms=(self.admitted_at - opened) * 1000.0,
            first_audio_ms=first,
            total_ms=(max(now, time.monotonic()) - opened) * 1000.0,
        )

    def _audio(self, pcm: np.ndarray) -> AudioEvent | None:
        if len(pcm) == 0:
            return None
        pcm = np.array(pcm, dtype=np.float32)  # own copy: a view would pin the whole tick's batch array
        event = AudioEvent(pcm=pcm, sample_offset=self.out, due_t=self.due_t, made_t=self.made_t)
        self.out += len(pcm)
        return event

    def _marks(self, marks: tuple[Mark, ...]) -> tuple[tuple[str, int, int], ...]:
        rate = self.sample_rate

        def to_out(frame: int) -> int:
            native = self.line_start + min(frame, self.n_frames) * self.hop
            return native if rate == SAMPLE_RATE else round(native * rate / SAMPLE_RATE)

        return tuple((m.label, to_out(m.start_frame), to_out(m.end_frame)) for m in marks)


_FADES: dict[int, np.ndarray] = {}


def fade(n: int) -> np.ndarray:
    """Raised-cosine ramp from 1 to 0 over n samples (the cancel fade; one frame = 11.6 ms)."""
    if n not in _FADES:
        _FADES[n] = (0.5 * (1.0 + np.cos(np.pi * (np.arange(n) + 1) / n))).astype(np.float32)
    return _FADES[n]
