"""Phoneme, viseme and word marks (in frames) from per-symbol durations."""
from __future__ import annotations

from collections.abc import Sequence

from npc_voice.contracts import Mark, PhonemeInput

STRESS = frozenset("ˈˌ")  # belongs to the phoneme after it
# length, palatalisation, aspiration, rhotic hook, combining diacritics: belong to the phoneme before
TRAILING = frozenset("ːˑ˞ʲʰˤ\u0327\u0303\u032a\u032f\u0329")
NOT_PHONEMES = frozenset(" !'(),-.:;?\"_^$#↓0123456789")  # gaps, punctuation, markers


def _spans(durations: Sequence[int]) -> list[tuple[int, int]]:
    out, t = [], 0
    for d in durations:
        out.append((t, t + int(d)))
        t += int(d)
    return out


def phoneme_marks(symbols: Sequence[str], durations: Sequence[int]) -> tuple[Mark, ...]:
    """One mark per phoneme; stress marks' frames join the next phoneme, length and other
    modifiers join (and are appended to the label of) the previous one. Gaps and
    punctuation make no mark."""
    marks: list[Mark] = []
    pending: int | None = None  # start frame of stress marks waiting for their phoneme
    attached = False  # the last phoneme symbol made marks[-1] (modifiers may extend it)
    for sym, (start, end) in zip(symbols, _spans(durations), strict=True):
        if sym in STRESS:
            pending = start if pending is None else pending
        elif sym in TRAILING:
            if attached:
                last = marks[-1]
                marks[-1] = Mark(last.label + sym, last.start_frame, max(last.end_frame, end))
        elif sym in NOT_PHONEMES:
            pending, attached = None, False
        else:
            first = start if pending is None else pending
            pending, attached = None, end > first
            if attached:
                marks.append(Mark(sym, first, end))
    return tuple(marks)


def viseme_marks(visemes: Sequence[str], durations: Sequence[int]) -> tuple[Mark, ...]:
    """Consecutive equal visemes merged; covers every frame of the line."""
    marks: list[Mark] = []
    for vis, (start, end) in zip(visemes, _spans(durations), strict=True):
        if end == start:
            continue
        if marks and marks[-1].label == vis:
            marks[-1] = Mark(vis, marks[-1].start_frame, end)
        else:
            marks.append(Mark(vis, start, end))
    return tuple(marks)


def word_marks(phonemes: PhonemeInput, durations: Sequence[int]) -> tuple[Mark, ...]:
    """A word spans its first to last symbol (PhonemeInput.word_of); words without symbols are skipped."""
    spans: dict[int, tuple[int, int]] = {}
    for w, (start, end) in zip(phonemes.word_of, _spans(durations), strict=True):
        if w < 0 or w >= len(phonemes.words):
            continue
        s0, e0 = spans.get(w, (start, end))
        spans[w] = (min(s0, start), max(e0, end))
    return tuple(Mark(phonemes.words[w], s, e) for w, (s, e) in sorted(spans.items()))
