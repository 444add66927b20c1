"""The model interface: what the engine (and only the engine) calls.

The engine owns slots and scheduling; the model owns the math and the *shape*
of a character's state. Three calls make a line:

1. ``prepare(phonemes, ...)`` once per line/phrase: encoder + durations. The
   engine first turns text into a ``PhonemeInput`` with ``npc_voice.frontend``; the
   model never sees text (imports point down: engine -> {frontend, model} -> {audio,
   kernels} -> contracts; docs/ARCHITECTURE.md, "Layers"). Returns a ``PreparedLine``
   with per-frame conditioning and timing marks.
2. ``step(state, slots, cond, controls)`` every tick, batched over streams:
   advances each stream K frames (decoder SSM step + vocoder) against the state
   pool rows named by ``slots`` and returns K*hop PCM samples per stream.
3. ``state_spec()`` tells the engine which pool tensors to allocate.

This module imports only torch and npc_voice.contracts (where the shared types and constants
live); nothing here knows about gRPC or slots' owners.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

# Shared with the layers around the model; re-exported here as part of the model's interface.
from npc_voice.contracts import (
    CONTROL_BREATHINESS,
    CONTROL_FORMANT,
    CONTROL_PITCH,
    CONTROL_TILT,
    CONTROL_VOICING,
    CONTROL_VOLUME,
    HOP,
    N_CONTROLS,
    SAMPLE_RATE,
    STYLES,
    Mark,
    PhonemeInput,
    StateSpec,
    Style,
    TextError,
)

__all__ = [
    "CONTROL_BREATHINESS", "CONTROL_FORMANT", "CONTROL_PITCH", "CONTROL_TILT", "CONTROL_VOICING", "CONTROL_VOLUME",
    "HOP", "N_CONTROLS", "SAMPLE_RATE", "STYLES", "Mark", "PhonemeInput", "PreparedLine", "StateSpec", "Style",
    "TextError", "VoiceModel",
]


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
