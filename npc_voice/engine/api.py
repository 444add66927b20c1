"""The engine's public types: the contract between the engine and the gRPC server.

Plain dataclasses and exceptions only: no gRPC, no asyncio types in fields, no tensors.
The two classes with behaviour are implemented beside this file and exported, with these
types, by ``npc_voice.engine`` (``from npc_voice.engine import Engine, Stream``):

- ``Engine`` (``npc_voice.engine.engine``): owns the device, the state pool and the one
  engine thread. ``Engine(voices, config)``, ``start()``, ``close()``, ``open_stream(...)``,
  ``speak(LineRequest)``, ``cancel_character``, ``reset_character``,
  ``export_character(character, voice="")`` (``voice``: whose fresh state to export for a
  character that has not spoken yet), ``import_character``, ``stats() -> EngineStats``.
- ``Stream`` (``npc_voice.engine.stream``): one continuous sample clock for one character;
  ``say(text)``, ``end_input()``, ``cancel()``, ``close()``, ``async events()``,
  ``events_sync(timeout)``, plus ``wait_ended(timeout)`` and ``done``.

Errors: ``open_stream`` raises UnknownVoiceError for an unknown voice and ValueError for a
sample rate outside SAMPLE_RATES or a control outside its value range
(npc_voice.contracts.CONTROL_RANGES: speed 0.25..4, pitch -24..24 semitones, formant 0.5..2,
breathiness 0..1, volume 0..4) or an unknown style. ``say`` raises TextError from the
frontend at once. ``events()`` raises CapacityError (no slot within max_queue_wait_s), or
TextError when the voice itself refuses a line's symbols before any audio of the stream.

Slot lifecycle: a character's state lives in a pool slot while it speaks; when its stream
ends the state stays in the slot (LRU) until the slot is needed, then moves to host memory;
a character that speaks again gets its state back (identical continuation). A character has
at most one active stream: a second stream for the same character while it speaks waits
(queued behind the first) and then speaks on the same state. That wait is bounded by
``max_queue_wait_s`` (CapacityError) only while the first stream still takes input (an open
Converse context); once its input has ended it finishes by itself.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from npc_voice.contracts import SAMPLE_RATES, STYLES

__all__ = [
    "SAMPLE_RATES",
    "STATE_FORMAT_VERSION",
    "AudioEvent",
    "BusyError",
    "BusyPolicy",
    "CapacityError",
    "EndEvent",
    "EngineConfig",
    "EngineError",
    "EngineStats",
    "LineRequest",
    "MarkEvent",
    "StateFormatError",
    "StepError",
    "UnknownVoiceError",
    "VoiceControls",
]

STATE_FORMAT_VERSION = 1  # of the bytes export_character writes (ExportCharacterStateResponse.format_version)


@dataclass(frozen=True)
class VoiceControls:
    speed: float = 1.0  # duration divisor (>1 faster)
    pitch_semitones: float = 0.0  # f0 shift; the model gets 2 ** (semitones / 12)
    formant: float = 1.0  # spectral-envelope warp; >1 smaller speaker, <1 bigger
    breathiness: float = 0.0  # 0..1 extra noise in voiced frames
    volume: float = 1.0  # linear gain
    style: str = ""  # "" or "normal" | "whisper" | "shout" (npc_voice.contracts.STYLES)


def controls_row(c: VoiceControls) -> tuple[float, ...]:
    """The model's per-row control vector for ``c`` (columns as npc_voice.contracts.CONTROL_*).
    The one place the engine turns VoiceControls into numbers for a step. A style adds fixed
    offsets (pitch, volume) and sets the voicing and tilt columns; an unknown style is a ValueError."""
    style = STYLES.get(c.style or "normal")
    if style is None:
        raise ValueError(f"unknown style {c.style!r}; use one of {', '.join(STYLES)}")
    return (2.0 ** ((c.pitch_semitones + style.pitch_semitones) / 12.0), c.formant, c.breathiness,
            c.volume * style.volume, style.voicing, style.tilt_db)


class BusyPolicy(enum.Enum):
    """What a new stream does when its character is already speaking (or has streams waiting)."""

    QUEUE = "queue"  # wait behind them (bounded count per character and bounded time)
    INTERRUPT = "interrupt"  # the current line fades out (~10 ms), ends "interrupted"; this one starts
    REJECT = "reject"  # BusyError at once


@dataclass(frozen=True)
class LineRequest:
    character: str  # full id: "guard" or "guard/42" (instance = own state); opaque to the engine
    voice: str  # voice name (the engine's voices dict key)
    text: str
    controls: VoiceControls
    lexicon: Mapping[str, str]  # lowercase word -> IPA
    sample_rate: int  # output rate: one of SAMPLE_RATES
    request_id: str
    busy: BusyPolicy = BusyPolicy.QUEUE


@dataclass(frozen=True)
class MarkEvent:
    """Timing marks of one line, sent before the audio they describe.

    Every mark is (label, start_sample, end_sample) at the stream's output rate, counted from
    the stream's start (so later lines of a stream continue the same clock); end exclusive.
    One MarkEvent covers a whole line and comes right before the line's first AudioEvent, so a
    client has the line's lip-sync and subtitles ahead of time. When the stream is cancelled
    mid-line, the marks of the rest of that line were already sent: they may lie beyond the
    EndEvent's total_samples (a client drops marks at or after total_samples)."""

    phonemes: tuple[tuple[str, int, int], ...]
    visemes: tuple[tuple[str, int, int], ...]
    words: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class AudioEvent:
    pcm: np.ndarray  # float32 [n] at the output rate, in [-1, 1]
    sample_offset: int  # of pcm[0], from stream start
    data: bytes = b""  # the same samples encoded for the wire, when the stream was opened with an encoding
    # when (time.monotonic(), the same clock in every process on this machine) the engine's model
    # of the client's playback reaches pcm[0] (inf: no clock yet, the stream's first audio), and when
    # the engine made it: made on time but handed to the client after due_t is the edge's lateness
    due_t: float = float("inf")
    made_t: float = 0.0


@dataclass(frozen=True)
class EndEvent:
    reason: str  # "completed" | "cancelled" | "interrupted"
    total_samples: int  # samples sent on this stream (fade included), output rate
    queued_ms: float  # stream opened -> first engine tick that served it
    first_audio_ms: float  # stream opened -> first audio event queued (0 if none)
    total_ms: float  # stream opened -> end


class EngineError(Exception):
    """Base of the engine's errors; the message is user-facing and quotes the bad value."""


class EngineUnavailableError(EngineError):
    """The engine cannot take this now (stopped, or its process is restarting) (-> UNAVAILABLE)."""


class UnknownVoiceError(EngineError):
    """The voice name is not one of the engine's voices (-> NOT_FOUND)."""


class CapacityError(EngineError):
    """No slot became free within max_queue_wait_s (-> RESOURCE_EXHAUSTED)."""


class BusyError(CapacityError):
    """The character is busy and the stream's BusyPolicy (or the per-character queue bound)
    refuses to wait (-> RESOURCE_EXHAUSTED)."""


class StepError(EngineError):
    """The model step (or a line's preparation) raised: the affected streams fail (-> INTERNAL)."""


class StateFormatError(EngineError):
    """Bytes given to import_character are not a valid state for this voice (-> INVALID_ARGUMENT)."""


# Text problems raise npc_voice.contracts.TextError (-> INVALID_ARGUMENT).


@dataclass(frozen=True)
class EngineConfig:
    slots: int = 256  # pool rows (slot 0 is scratch, so slots-1 usable)
    frames_per_tick: int = 8  # K: frames every running stream advances per tick (8 = 93 ms; bench/README.md)
    max_queue_wait_s: float = 2.0  # bounded wait (capacity, or a busy character) before CapacityError
    max_waiting_per_character: int = 4  # streams queued behind a busy character; more: BusyError at once
    host_cache_characters: int = 100_000  # idle states kept in host memory per voice (LRU); older ones forgotten
    host_cache_mb: float = 2048.0  # ... and at most this many MB of them per voice (whichever bound is lower)
    device: str = "auto"  # auto|cpu|cuda; auto = cuda if available, chosen once at start
    # Pacing (EngineCore._choose). Every K frames of audio a beat steps, in one model step per voice,
    # every speaking stream whose generated audio runs out within lookahead_ms + one tick (K frames)
    # after the beat — in steady state all of them, so the batch stays whole. Between beats only new
    # lines (a first piece at once) and streams still under lookahead_ms step. The lead stays at
    # about lookahead_ms + one tick; lead_slack_ms bounds what a stream may run ahead beyond
    # lookahead_ms (the beat's tick, and a beat's short piece topped up with streams due next).
    lookahead_ms: float = 250.0
    lead_slack_ms: float = 300.0
    threads: int = 0  # torch threads on CPU; 0 = half the cores (engine.default_threads)
    # Threads that step one CPU model call's rows together (the engine thread and step_threads - 1
    # helpers, each taking chunks of the rows; split.py). 0 = auto (split.default_step_threads: 2 on
    # 2 cores, up to 4); 1 = the engine thread alone. Ignored on GPU.
    step_threads: int = 0
    max_batch: int = 0  # most streams stepped per model call (earliest deadline first; a lockstep tick beyond it is
    # stepped in pieces, a first-audio tick may run between them); 0 = auto: 32 on CPU, slots - 1 on GPU
    # Admission from measured cost (on by default): a new stream is admitted only while the fitted
    # tick time with one more stream fits in this fraction of the audio a tick makes; otherwise it
    # waits (max_queue_wait_s) and is then refused, so streams already speaking keep real time.
    # 0 = off: slots are the only limit.
    max_load: float = 0.7
    admit_floor: int = 4  # this many running streams per voice are admitted whatever the measured cost
    # A line's encoder pass runs on the engine thread: longer lines (after normalisation: "4096"
    # digits are ~20,000 symbols) are split at sentence/clause/word boundaries into consecutive
    # lines of at most this many symbols (~8 s of speech, ~30 ms to prepare). 0 = never split.
    max_line_symbols: int = 160
    # The daemon's line preparer keeps lines it prepared (keyed by voice, phonemes and speed) up to
    # this many MB, so a line said again (a bark) skips the encoder. 0 = off. (Engine in its own process.)
    prepare_cache_mb: float = 64.0


@dataclass(frozen=True)
class EngineStats:
    """A snapshot the engine thread publishes after every tick (readers never touch engine state)."""

    active_streams: int  # streams holding a slot and not yet ended (running)
    slots_in_use: int  # slots held by active streams (idle resident states are not counted)
    slots_total: int  # usable slots (config.slots - 1), all voices
    ticks: int  # engine ticks that stepped at least one stream
    tick_ms_mean: float  # mean wall time of those ticks (recent window)
    tick_ms_p99: float  # 99th percentile of the same window
    underruns: int  # times a stream's generated audio fell behind its playback clock
    characters_known: int  # characters with a state (resident in the pool or in host memory)
    characters_evicted: int  # of those, states held in host memory
    device: str  # "cpu" or "cuda:0"
    lines_completed: int
    lines_cancelled: int
    lines_rejected: int  # streams refused with CapacityError / BusyError
    streams_waiting: int = 0  # opened, not yet admitted (capacity, or the character is busy)
    per_voice: Mapping[str, int] = field(default_factory=dict)  # running streams per voice
    lines_opened: int = 0  # once idle: completed + cancelled + interrupted + rejected + failed
    lines_failed: int = 0  # ended by an error (a failed step or preparation, unspeakable text)
    lines_interrupted: int = 0  # ended by a barge-in (BusyPolicy.INTERRUPT)
    batch_fill: float = 1.0  # recent mean of stepped rows / running streams per step
    step_failures: int = 0  # model steps that raised
    characters_forgotten: int = 0  # idle states dropped by the host-memory bound
    serving: bool = True  # False while steps keep failing (health NOT_SERVING)
    load: float = 0.0  # fitted step time of the running batch / its real-time budget
    slots_per_voice: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # voice -> (in use, total)
    # cumulative histogram of tick wall time: (upper bound in seconds, count of ticks <= bound), +inf last
    tick_seconds_buckets: tuple[tuple[float, int], ...] = ()
    tick_seconds_sum: float = 0.0
    # cumulative histogram of first audio (stream opened -> first audio queued), same shape
    first_audio_seconds_buckets: tuple[tuple[float, int], ...] = ()
    first_audio_seconds_sum: float = 0.0
    # the daemon's line preparer (engine in its own process; 0 when the engine runs in the daemon's thread)
    lines_prepared: int = 0  # lines run through the encoder
    prepare_cache_hits: int = 0  # lines said again, taken from the preparer's cache (prepare_cache_mb)
    prepare_cache_bytes: int = 0  # bytes the cache holds now

