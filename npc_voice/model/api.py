"""The model interface: what the engine (and only the engine) calls.

The engine owns slots and scheduling; the model owns the math and the *shape*
of a character's state. Three calls make a line:

1. ``prepare(phonemes, ...)`` once per line/phrase: encoder + durations. The
   engine first turns text into a ``PhonemeInput`` with ``npc_voice.frontend``
   (imports point down: server -> frontend -> engine -> model -> kernels/audio).
   Returns a ``PreparedLine`` with per-frame conditioning and timing marks.
2. ``step(state, slots, cond, controls)`` every tick, batched over streams:
   advances each stream K frames (decoder SSM step + vocoder) against the state
   pool rows named by ``slots`` and returns K*hop PCM samples per stream.
3. ``state_spec()`` tells the engine which pool tensors to allocate.

This module imports only torch; nothing here knows about gRPC or slots' owners.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

SAMPLE_RATE = 22050  # native output rate, Hz
HOP = 256  # samples per frame (11.6 ms; 86.13 frames/s)

# Columns of the per-stream controls tensor passed to ``step`` ([B, N_CONTROLS]).
# They act inside the vocoder, per frame, so they may change between ticks.
CONTROL_PITCH = 0  # f0 multiplier (2 ** (semitones / 12)); 1.0 = unchanged
CONTROL_FORMANT = 1  # spectral-envelope warp; >1 = smaller speaker (child), <1 = bigger (giant)
CONTROL_BREATHINESS = 2  # 0..1 extra noise mixed into voiced frames; 0 = as trained
CONTROL_VOLUME = 3  # linear gain applied to the output
CONTROL_VOICING = 4  # 0..1 multiplier on the voiced (harmonic) part; 0 = whisper (noise only)
CONTROL_TILT = 5  # spectral tilt, dB per octave around 1 kHz; > 0 = brighter (a projected voice)
N_CONTROLS = 6


@dataclass(frozen=True)
class Style:
    """A speaking style: fixed offsets the engine folds into the control columns."""

    voicing: float = 1.0  # CONTROL_VOICING
    tilt_db: float = 0.0  # CONTROL_TILT, dB per octave
    pitch_semitones: float = 0.0  # added to the character's pitch
    volume: float = 1.0  # multiplies the character's volume


# Measured with `npc-voice eval` (npc_voice/voices/default/MODEL_CARD.md). "" is "normal".
STYLES: dict[str, Style] = {
    "normal": Style(),
    "whisper": Style(voicing=0.0, tilt_db=1.0, volume=0.6),  # breath only, a little brighter, quieter
    "shout": Style(tilt_db=3.0, pitch_semitones=4.0, volume=1.4),  # projected: higher, brighter, louder
}


class TextError(ValueError):
    """Text that cannot be spoken (empty after normalization, no phonemes, too long).

    The message says what was wrong with the text, quoting it (shortened)."""


@dataclass(frozen=True)
class PhonemeInput:
    """What the frontend hands the model for one line (built by npc_voice.frontend)."""

    text: str  # normalized text
    symbols: tuple[str, ...]  # phoneme symbols (IPA codepoints, stress/length marks, " " word gaps, punctuation)
    word_of: tuple[int, ...]  # per symbol: index into ``words``, or -1 (spaces, punctuation, pauses)
    visemes: tuple[str, ...]  # per symbol: viseme name (sil PP FF TH DD kk CH SS nn RR aa E ih oh ou)
    words: tuple[str, ...]  # the words of ``text`` as they should appear in word marks


@dataclass(frozen=True)
class Mark:
    label: str  # IPA phoneme, viseme name, or word as written after normalization
    start_frame: int  # first frame of the mark, from the start of the line
    end_frame: int  # exclusive


@dataclass(frozen=True)
class PreparedLine:
    text: str  # the normalized text that will be spoken
    cond: torch.Tensor  # [n_frames, d_cond] float32, on the model's device
    phonemes: tuple[Mark, ...]
    visemes: tuple[Mark, ...]  # Oculus/OpenXR 15-viseme set: sil PP FF TH DD kk CH SS nn RR aa E ih oh ou
    words: tuple[Mark, ...]

    @property
    def n_frames(self) -> int:
        return int(self.cond.shape[0])


@dataclass(frozen=True)
class StateSpec:
    """One pool tensor: the engine allocates ``torch.zeros((slots, *shape), dtype)``."""

    shape: tuple[int, ...]  # per-slot shape
    dtype: torch.dtype


class VoiceModel(Protocol):
    sample_rate: int  # == SAMPLE_RATE
    hop: int  # == HOP
    d_cond: int  # width of PreparedLine.cond
    device: torch.device
    name: str  # voice name from the checkpoint
    version: str  # checkpoint identity (hash); exported states refuse other versions

    def prepare(self, phonemes: PhonemeInput, *, speed: float = 1.0) -> PreparedLine:
        """Encoder + duration predictor for one line. ``speed`` > 1 is faster
        (durations divided by speed). Raises ``TextError`` for symbols the voice
        does not know or an empty sequence."""
        ...

    def prepare_batch(self, phonemes: list[PhonemeInput], *, speeds: list[float]) -> list[PreparedLine]:
        """Same as ``prepare`` for several lines in one padded encoder pass."""
        ...

    def state_spec(self) -> dict[str, StateSpec]:
        """Every per-character state tensor (decoder conv/SSM state, vocoder state)."""
        ...

    @torch.inference_mode()
    def step(
        self,
        state: dict[str, torch.Tensor],  # name -> [slots, *spec.shape], updated in place
        slots: torch.Tensor,  # [B] int64 rows of the pool; padding rows point at slot 0 (scratch)
        cond: torch.Tensor,  # [B, K, d_cond] conditioning frames for the next K frames
        controls: torch.Tensor,  # [B, N_CONTROLS] float32
    ) -> torch.Tensor:
        """Advance every row K frames. Returns PCM [B, K * hop] float32 in [-1, 1].

        Stepping K frames at once or one frame K times gives identical samples
        (no clicks at chunk boundaries). Deterministic for the same inputs."""
        ...

    def silence_cond(self) -> torch.Tensor:
        """[d_cond] conditioning for one frame of silence (pads a short tail, fades)."""
        ...
