"""A thin ctypes bridge to libespeak-ng (bundled by the ``espeakng-loader`` wheel).

espeak-ng keeps global state (voice, clause reader), so every call goes through one
lock. The library is loaded and initialised once, on first use.

Piper (the teacher) phonemizes with espeak's ``TextToPhonemesWithTerminator``, which
also reports each clause's punctuation. The library in ``espeakng-loader`` only has
``espeak_TextToPhonemes``, so the terminator is read back from the text: espeak
advances a text pointer past each clause (plus a one-character look-ahead), and the
punctuation at the end of the consumed span is the clause's terminator.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from dataclasses import dataclass

_LOG = logging.getLogger(__name__)

_VOICE = b"en-us"  # the teacher's espeak voice (joe's config: espeak.voice)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of exit() on bad data
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02

_SENTENCE_END = ".?!"
_CLAUSE_PUNCT = ".?!,;:"
_LANG_SWITCH = re.compile(r"\([^)]*\)")  # "(fr)" markers around foreign words; Piper drops them too


@dataclass(frozen=True)
class Clause:
    """One espeak clause."""

    ipa: str  # espeak IPA for the clause, words separated by spaces, no punctuation
    terminator: str  # one of . ? ! , ; : or "" (no punctuation, or an ellipsis)
    end_of_sentence: bool  # True after . ? ! and for the last clause of the text
    start: int  # character span of the clause in the input text (best effort)
    end: int


class _Espeak:
    def __init__(self) -> None:
        import espeakng_loader  # runtime dependency; imported here so the module imports cheaply

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _ESPEAK_INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with data at {data_path!r} (code {rate})")
        err = lib.espeak_SetVoiceByName(_VOICE)
        if err != 0:
            raise RuntimeError(f"espeak-ng has no voice {_VOICE!r} (code {err})")
        self._lib = lib
        _LOG.debug("espeak-ng loaded from %s", espeakng_loader.get_library_path())

    def clauses(self, text: str) -> list[Clause]:
        """IPA per clause, as espeak splits them (the caller holds the lock)."""
        raw = text.encode("utf-8")
        buf = ctypes.create_string_buffer(raw)
        base = ctypes.addressof(buf)
        ptr = ctypes.c_void_p(base)
        out: list[Clause] = []
        start_byte = 0
        while ptr.value:
            result = self._lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _PHONEMES_IPA)
            end_byte = len(raw) if not ptr.value else min(len(raw), ptr.value - base)
            ipa = _LANG_SWITCH.sub("", (result or b"").decode("utf-8", errors="replace")).strip()
            consumed = raw[start_byte:end_byte].decode("utf-8", errors="replace")
            final = not ptr.value or end_byte >= len(raw)
            body, rest = _split_lookahead(consumed, final)
            terminator, sentence = _terminator(body)
            c_start = len(raw[:start_byte].decode("utf-8", errors="replace"))
            out.append(Clause(ipa, terminator, sentence or final, c_start, c_start + len(body)))
            start_byte = end_byte - len(rest.encode("utf-8"))
            if final:
                break
        return out


def _split_lookahead(consumed: str, final: bool) -> tuple[str, str]:
    """Split off the look-ahead espeak read from the next clause ("dusk; b" -> "dusk;", " b")."""
    if final:
        return consumed, ""
    stripped = consumed.rstrip()
    i = len(stripped)
    while i > 0 and not stripped[i - 1].isspace() and stripped[i - 1] not in _CLAUSE_PUNCT + "…":
        i -= 1
    if i == 0:  # no boundary found: keep the whole span in this clause
        return consumed, ""
    return consumed[:i], consumed[i:]


def _terminator(body: str) -> tuple[str, bool]:
    """The clause's punctuation as Piper reports it: the first mark of the trailing run."""
    tail = body.rstrip()
    j = len(tail)
    while j > 0 and tail[j - 1] in _CLAUSE_PUNCT + "…\"')]":
        j -= 1
    run = "".join(c for c in tail[j:] if c in _CLAUSE_PUNCT + "…")
    if not run or run.startswith("..") or run.startswith("…"):
        return "", False  # no punctuation, or an ellipsis: espeak pauses but reports nothing
    return run[0], run[0] in _SENTENCE_END


_ENGINE: _Espeak | None = None
_LOCK = threading.Lock()


def espeak_clauses(text: str) -> list[Clause]:
    """Thread-safe: phonemize ``text`` into espeak clauses (en-us, IPA)."""
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            _ENGINE = _Espeak()
        return _ENGINE.clauses(text)


def espeak_ipa(text: str) -> str:
    """IPA of a short text, clauses joined by spaces (used for word-length estimates)."""
    return " ".join(c.ipa for c in espeak_clauses(text) if c.ipa)
