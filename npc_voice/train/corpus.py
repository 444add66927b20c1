"""Training text: varied English for the teacher to read (no downloads).

``build_corpus(n, seed)`` mixes game dialogue from templates (guards, merchants, quest
givers, taverns, battle barks), everyday speech, questions, exclamations, numbers,
money, times, ordinals and names, plus hand-written lines. Line ``i`` depends only on
``(seed, i)``, so a longer corpus extends a shorter one (teacher data can grow in place).

The templates know about 900 words, too few for a voice that must read any line: a model
trained on them alone misheard twice as often on unseen lines (WER 30 %) as on its training
lines (15 %). From line ``TEMPLATE_ONLY_LINES`` on, half the lines are therefore *word-mix*
lines: function words and words drawn evenly from the 20,000 most frequent English words
(``words_en.txt``), shaped as statements, questions and exclamations. They need not make
sense; they cover the sounds and transitions of English. The first ``TEMPLATE_ONLY_LINES``
lines are unchanged so that teacher data made before stays valid.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from pathlib import Path

from npc_voice.train import corpus_words as W

Maker = Callable[[random.Random], str]


def _pick(rng: random.Random, items: tuple[str, ...]) -> str:
    return rng.choice(items)


def _money(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return f"${rng.randint(1, 99)}.{rng.randint(0, 99):02d}"
    if kind == 1:
        return f"${rng.choice([5, 10, 20, 50, 100, 250, 1000, 1500, 12000])}"
    if kind == 2:
        return f"{rng.randint(2, 999)} {rng.choice(['gold', 'silver', 'copper', 'crowns', 'marks', 'coins'])}"
    if kind == 3:
        return f"{rng.choice(['£', '€'])}{rng.randint(1, 500)}"
    if kind == 4:
        return f"{rng.randint(1, 9)},{rng.randint(0, 999):03d} gold"
    return f"{rng.choice(W.SMALL_NUMBERS)} {rng.choice(['gold pieces', 'silver coins', 'copper bits'])}"


def _time(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f"{rng.randint(1, 12)}:{rng.choice([0, 5, 15, 30, 45, 50]):02d}"
    if kind == 1:
        return f"{rng.randint(1, 12)}{rng.choice(['am', 'pm', ' a.m.', ' p.m.'])}"
    if kind == 2:
        return f"{rng.randint(13, 23)}:{rng.randint(0, 59):02d}"
    return rng.choice(W.TIMES_OF_DAY)


def _ordinal(rng: random.Random) -> str:
    n = rng.choice([1, 2, 3, 4, 5, 7, 9, 11, 12, 13, 21, 22, 23, 31, 42, 100, 101])
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _number(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return str(rng.randint(2, 20))
    if kind == 1:
        return str(rng.randint(21, 999))
    if kind == 2:
        return f"{rng.randint(1, 99)},{rng.randint(0, 999):03d}"
    if kind == 3:
        return f"{rng.randint(0, 99)}.{rng.randint(1, 9)}"
    return rng.choice(W.SMALL_NUMBERS)


def _name(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"{_pick(rng, W.TITLES)} {_pick(rng, W.SURNAMES)}"
    return _pick(rng, W.NAMES)


def _fill(rng: random.Random, template: str) -> str:
    """Replace {slot} markers; each slot draws independently."""
    slots: dict[str, Callable[[], str]] = {
        "name": lambda: _name(rng),
        "money": lambda: _money(rng),
        "time": lambda: _time(rng),
        "ordinal": lambda: _ordinal(rng),
        "number": lambda: _number(rng),
        "year": lambda: str(rng.choice([rng.randint(1100, 1999), rng.randint(2000, 2099)])),
        "percent": lambda: f"{rng.randint(1, 100)}%",
    }
    out = []
    rest = template
    while "{" in rest:
        head, _, tail = rest.partition("{")
        key, _, rest = tail.partition("}")
        out.append(head)
        out.append(slots[key]() if key in slots else _pick(rng, W.SLOTS[key]))
        out.append("")
    out.append(rest)
    return "".join(out)


def _template_line(rng: random.Random) -> str:
    group = rng.choice(tuple(W.TEMPLATES))
    return _fill(rng, rng.choice(W.TEMPLATES[group]))


def _long_line(rng: random.Random) -> str:
    """Two or three sentences in one line; sometimes the first two joined into one long sentence."""
    parts = [_template_line(rng) for _ in range(rng.choice((2, 2, 3)))]
    if parts[0].endswith(".") and parts[1].endswith(".") and rng.random() < 0.5:
        second = parts.pop(1)
        parts[0] = f"{parts[0][:-1]}, {_pick(rng, W.JOINERS)} {second[0].lower()}{second[1:]}"
    return " ".join(parts)


def _decorate(rng: random.Random, line: str) -> str:
    """Interjections and forms of address: the same template said by different people."""
    r = rng.random()
    if r < 0.2:
        line = f"{_pick(rng, W.INTERJECTIONS)}, {line[0].lower()}{line[1:]}" if not line.startswith("I ") \
            else f"{_pick(rng, W.INTERJECTIONS)}, {line}"
    elif r < 0.35 and line[-1] in ".!?" and line.count(" ") < 12:
        line = f"{line[:-1]}, {_pick(rng, W.SLOTS['addr'])}{line[-1]}"
    return line


def _bark(rng: random.Random) -> str:
    bark = _pick(rng, W.BARKS)
    if " " not in bark.strip() or rng.random() < 0.3:
        bark = f"{bark} {_pick(rng, W.BARKS)}"
    return bark


def _handwritten(rng: random.Random) -> str:
    return _pick(rng, W.HANDWRITTEN)


TEMPLATE_ONLY_LINES = 3000
WORD_MIX_SHARE = 0.5  # of the lines from TEMPLATE_ONLY_LINES on
_FUNCTION_RANKS = 150  # the most frequent words are mostly function words


@functools.cache
def vocabulary() -> tuple[str, ...]:
    """The word list, most frequent first (comment lines skipped)."""
    path = Path(__file__).with_name("words_en.txt")
    words = tuple(w for w in (ln.strip() for ln in path.read_text(encoding="utf-8").splitlines())
                  if w and not w.startswith("#"))
    if len(words) < 1000:
        raise ValueError(f"{path}: only {len(words)} words")
    return words


def _word_mix(rng: random.Random) -> str:
    """A line of 4-14 words: function words between words drawn evenly from the whole list."""
    words = vocabulary()
    n = rng.randint(4, 14)
    out: list[str] = []
    for _ in range(n):
        if rng.random() < 0.4:
            out.append(words[rng.randrange(_FUNCTION_RANKS)])
        else:
            out.append(words[rng.randrange(_FUNCTION_RANKS, len(words))])
        if len(out) < n and len(out) > 1 and rng.random() < 0.08:
            out[-1] += ","
    end = rng.choices((".", "?", "!"), weights=(0.7, 0.2, 0.1))[0]
    line = " ".join(out).rstrip(",") + end
    return line


_MAKERS: tuple[tuple[Maker, float], ...] = (
    (_template_line, 0.70),
    (_long_line, 0.18),
    (_bark, 0.07),
    (_handwritten, 0.05),
)
MAX_WORDS = 30


def corpus_line(seed: int, index: int) -> str:
    """Line ``index`` of the corpus for ``seed`` (independent of the corpus size)."""
    rng = random.Random(f"npc-voice-corpus:{seed}:{index}")
    if index >= TEMPLATE_ONLY_LINES and random.Random(f"npc-voice-mix:{seed}:{index}").random() < WORD_MIX_SHARE:
        line = _word_mix(rng)
        return line[0].upper() + line[1:]
    makers, weights = zip(*_MAKERS, strict=True)
    for _ in range(20):  # redraw lines over MAX_WORDS (rare: long joined sentences)
        maker = rng.choices(makers, weights=weights)[0]
        line = " ".join(maker(rng).split())
        if maker is not _handwritten:
            line = _decorate(rng, line)
        if 2 <= len(line.split()) <= MAX_WORDS:
            break
    return line[0].upper() + line[1:]


def build_corpus(n: int, seed: int) -> list[str]:
    """``n`` lines of varied English, deterministic for ``seed``; a prefix of any longer corpus."""
    if n < 0:
        raise ValueError(f"corpus size must be >= 0, got {n}")
    return [corpus_line(seed, i) for i in range(n)]
