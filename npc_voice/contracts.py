"""What several layers share: rates, frames, voice controls, the phoneme input, marks, text
errors, state specs and the phoneme symbol inventory.

The leaf of the import graph: this module imports nothing of npc_voice (tests/test_imports.py
checks it), so every layer may import it and no constant has to be copied to dodge a cycle.
See docs/ARCHITECTURE.md, "Layers".
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for StateSpec's annotation: importing this module stays cheap (no torch)
    import torch

# ---- rates and frames ---------------------------------------------------------------------------

SAMPLE_RATE = 22050  # native output rate of every voice, Hz
HOP = 256  # samples per frame (11.6 ms)
FRAMES_PER_S = SAMPLE_RATE / HOP  # 86.13 decoder steps per second per stream
SAMPLE_RATES = (16000, 22050, 24000, 44100, 48000)  # output rates a stream may ask for (resampled)

# ---- voice controls -----------------------------------------------------------------------------

# Columns of the per-stream controls tensor the model's ``step`` takes ([B, N_CONTROLS] float32).
# They act inside the vocoder, per frame, so they may change between ticks.
CONTROL_PITCH = 0  # f0 multiplier (2 ** (semitones / 12)); 1.0 = unchanged
CONTROL_FORMANT = 1  # spectral-envelope warp; >1 = smaller speaker (child), <1 = bigger (giant)
CONTROL_BREATHINESS = 2  # 0..1 extra noise mixed into voiced frames; 0 = as trained
CONTROL_VOLUME = 3  # linear gain applied to the output
CONTROL_VOICING = 4  # 0..1 multiplier on the voiced (harmonic) part; 0 = whisper (noise only)
CONTROL_TILT = 5  # spectral tilt, dB per octave around 1 kHz; > 0 = brighter (a projected voice)
N_CONTROLS = 6
NEUTRAL_CONTROLS = (1.0, 1.0, 0.0, 1.0, 1.0, 0.0)  # a row that leaves the voice as trained


@dataclass(frozen=True)
class ControlRange:
    """The ranges of one voice control (inclusive), and what each bounds.

    - ``value``: the control itself. A character's configured value (voices.yaml) must lie in
      it (ConfigError); the engine accepts a ``VoiceControls`` only inside it (ValueError from
      ``open_stream``); and a character's value combined with a request's override is clamped
      to it (server/convert.py), so a valid request never fails the engine's check.
    - ``override``: a request's ``VoiceOverrides`` field (the proto documents these);
      outside it the request is INVALID_ARGUMENT.
    - ``combine``: how an override meets the character's value: "mul" multiplies, "add" adds.
    - ``config_key``: the key in a character's YAML entry (and ``CharacterSpec`` field).
    """

    value: tuple[float, float]
    override: tuple[float, float]
    combine: str  # "mul" | "add"
    config_key: str


# The one range table, keyed by the VoiceControls field (= the VoiceOverrides field).
CONTROL_RANGES: Mapping[str, ControlRange] = MappingProxyType({
    "speed": ControlRange((0.25, 4.0), (0.5, 2.0), "mul", "speed"),  # duration divisor
    "pitch_semitones": ControlRange((-24.0, 24.0), (-12.0, 12.0), "add", "pitch"),
    "formant": ControlRange((0.5, 2.0), (0.7, 1.4), "mul", "formant"),
    "breathiness": ControlRange((0.0, 1.0), (-1.0, 1.0), "add", "breathiness"),
    "volume": ControlRange((0.0, 4.0), (0.0, 4.0), "mul", "volume"),
})


@dataclass(frozen=True)
class Style:
    """A speaking style: fixed offsets the engine folds into the control columns."""

    voicing: float = 1.0  # CONTROL_VOICING
    tilt_db: float = 0.0  # CONTROL_TILT, dB per octave
    pitch_semitones: float = 0.0  # added to the character's pitch
    volume: float = 1.0  # multiplies the character's volume


# Measured with `npc-voice eval` (npc_voice/voices/default/MODEL_CARD.md). "" is "normal".
STYLES: Mapping[str, Style] = MappingProxyType({
    "normal": Style(),
    "whisper": Style(voicing=0.0, tilt_db=1.0, volume=0.6),  # breath only, a little brighter, quieter
    "shout": Style(tilt_db=3.0, pitch_semitones=4.0, volume=1.4),  # projected: higher, brighter, louder
})

# ---- phonemes, marks, text errors ---------------------------------------------------------------

# The phoneme inventory the frontend emits and a voice's symbol ids index: the teacher voice's
# (Piper en_US-joe-medium) phoneme_id_map, every key one codepoint, PHONEME_SYMBOLS[i] has Piper
# id i. The first three are Piper's pad, begin and end markers; the frontend never emits them
# (index 0 makes a natural padding id for a model).
PAD, BOS, EOS = "_", "^", "$"
PHONEME_SYMBOLS: tuple[str, ...] = tuple(
    "_^$ !'(),-.:;?"
    "abcdefhijklmnopqrstuvwxyz"
    "æçðøħŋœǀǁǂǃ"
    "ɐɑɒɓɔɕɖɗɘəɚɛɜɞɟɠɡɢɣɤɥɦɧɨɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾʀʁʂʃʄʈʉʊʋʌʍʎʏʐʑʒʔʕʘʙʛʜʝʟʡʢ"
    "ʲˈˌːˑ˞βθχᵻⱱ"
    "0123456789"
    "\u0327\u0303\u032a\u032f\u0329"  # combining cedilla, tilde, bridge below, inverted breve below, syllabic
    "ʰˤε↓#\""
)


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


# ---- state ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateSpec:
    """One pool tensor: the engine allocates ``torch.zeros((slots, *shape), dtype)``."""

    shape: tuple[int, ...]  # per-slot shape
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of one slot's tensor."""
        return math.prod(self.shape) * self.dtype.itemsize
