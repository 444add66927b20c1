"""npc-voice frontend: text -> normalized words -> phoneme symbols (+ words, visemes).

``text_to_phonemes`` is the one call the engine needs; it is thread-safe (espeak-ng
runs under one lock) and takes a few milliseconds per line.
"""

from npc_voice.contracts import PhonemeInput, TextError
from npc_voice.frontend.normalize import normalize
from npc_voice.frontend.phonemes import MAX_TEXT_BYTES, text_to_phonemes, validate_lexicon
from npc_voice.frontend.symbols import PHONEME_SYMBOLS, SYMBOL_ID, VISEMES

__all__ = [
    "MAX_TEXT_BYTES",
    "PHONEME_SYMBOLS",
    "SYMBOL_ID",
    "VISEMES",
    "PhonemeInput",
    "TextError",
    "normalize",
    "text_to_phonemes",
    "validate_lexicon",
]
