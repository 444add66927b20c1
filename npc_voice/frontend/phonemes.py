"""Text -> ``PhonemeInput``: normalize, espeak IPA per clause, Piper's punctuation rules,
word alignment, per-character lexicon, visemes.

The symbol sequence follows Piper's espeak phonemizer (the teacher's), so the teacher
data and the runtime model see the same sequence:
- a clause's IPA is NFD-decomposed into single codepoints; symbols the voice does not
  know are dropped (Piper drops them too, with a warning);
- the clause's punctuation follows its IPA; after ``,`` ``;`` ``:`` comes a space;
- sentences (ending in ``.`` ``?`` ``!``) are joined by one space. Piper would
  synthesize each sentence on its own; ``teacher.py`` turns that space back into
  Piper's end/begin markers, so the rule is: ``[.?!]`` followed by ``" "`` = a new sentence.
Deliberate differences from Piper: an ellipsis (or a clause espeak ends without
punctuation) inside a line becomes ``", "`` (Piper glues the next word on with no gap).
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Mapping

from npc_voice.contracts import PhonemeInput, TextError
from npc_voice.frontend.espeak import espeak_clauses, espeak_ipa
from npc_voice.frontend.normalize import normalize
from npc_voice.frontend.symbols import BOS, EOS, MODIFIERS, PAD, PUNCTUATION, SYMBOL_ID, viseme_sequence

_LOG = logging.getLogger(__name__)

MAX_TEXT_BYTES = 4096
_MARKERS = frozenset((PAD, BOS, EOS))
_WORD = re.compile(r"\S+")
_EDGE_PUNCT = "\"'()[]{}.,;:!?…-*_~/\\|<>"
_MAX_GROUP = 4  # at most this many espeak words per text word, or text words per espeak word


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _ipa_symbols(ipa: str) -> list[str]:
    """IPA string -> known single-codepoint symbols (NFD, unknown ones dropped)."""
    out = []
    for ch in unicodedata.normalize("NFD", ipa):
        if ch in SYMBOL_ID and ch not in _MARKERS:
            out.append(ch)
        else:
            _LOG.debug("dropping phoneme %r (U+%04X): not in the voice's symbol set", ch, ord(ch))
    return out


@functools.lru_cache(maxsize=8192)
def _expected_len(word: str) -> int:
    """Symbols espeak gives ``word`` alone: the yardstick for aligning words to IPA."""
    return max(1, len(_ipa_symbols(espeak_ipa(word).replace(" ", ""))))


def validate_lexicon(lexicon: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Check and decompose a lexicon {lowercase word: IPA}; raises ValueError quoting the bad entry."""
    out: dict[str, tuple[str, ...]] = {}
    for word, ipa in lexicon.items():
        if not isinstance(word, str) or not word or word != word.lower() or any(c.isspace() for c in word):
            raise ValueError(f"lexicon key {word!r} must be one lowercase word without spaces")
        if not isinstance(ipa, str):
            raise ValueError(f"lexicon value for {word!r} must be an IPA string, got {ipa!r}")
        symbols = tuple(unicodedata.normalize("NFD", ipa.strip()))
        bad = [c for c in symbols if c not in SYMBOL_ID or c in _MARKERS or c in PUNCTUATION or c == " "]
        if bad or not symbols:
            raise ValueError(f"lexicon entry {word!r}: {ipa!r} has symbols the voice does not know: {bad!r}")
        out[word] = symbols
    return out


def _words_with_spans(text: str) -> list[tuple[str, int]]:
    words = []
    for m in _WORD.finditer(text):
        token = m.group(0).strip(_EDGE_PUNCT)
        if any(c.isalnum() for c in token):
            words.append((token, m.start() + m.group(0).index(token)))
    return words


def _align(chunk_lens: list[int], word_lens: list[int]) -> list[list[int]]:
    """Monotone alignment of espeak words (chunks) to text words by length.

    Returns, per chunk, the text-word indices it covers (one chunk may cover several
    words when espeak runs words together; several chunks may share one word). A chunk
    or a word may also stay unmatched (at a high cost), so this never fails. The dynamic
    program is O(chunks * words): a clause too long for it (thousands of words with no
    punctuation) is aligned proportionally instead (``_align_evenly``)."""
    m, n = len(chunk_lens), len(word_lens)
    if m * n > _MAX_ALIGN_CELLS:
        return _align_evenly(m, n)
    inf = float("inf")
    cost = [[inf] * (n + 1) for _ in range(m + 1)]
    back: list[list[tuple[int, int] | None]] = [[None] * (n + 1) for _ in range(m + 1)]
    cost[0][0] = 0.0
    for i in range(m + 1):
        for j in range(n + 1):
            c0 = cost[i][j]
            if c0 == inf:
                continue
            moves: list[tuple[int, int, float]] = []
            for k in range(1, _MAX_GROUP + 1):
                if i + 1 <= m and j + k <= n:  # one chunk <- k words
                    moves.append((1, k, abs(chunk_lens[i] - sum(word_lens[j : j + k])) + 0.5 * (k - 1)))
                if k > 1 and i + k <= m and j + 1 <= n:  # k chunks <- one word
                    moves.append((k, 1, abs(sum(chunk_lens[i : i + k]) - word_lens[j]) + 0.5 * (k - 1)))
            if i < m:
                moves.append((1, 0, chunk_lens[i] + 4.0))  # chunk without a word
            if j < n:
                moves.append((0, 1, word_lens[j] + 4.0))  # word espeak did not speak
            for di, dj, c in moves:
                if c0 + c < cost[i + di][j + dj]:
                    cost[i + di][j + dj] = c0 + c
                    back[i + di][j + dj] = (di, dj)
    groups: list[list[int]] = [[] for _ in range(m)]
    i, j = m, n
    while i > 0 or j > 0:
        step = back[i][j]
        assert step is not None, "alignment backtrack lost its path"
        di, dj = step
        for ci in range(i - di, i):
            groups[ci] = list(range(j - dj, j))
        i, j = i - di, j - dj
    return groups


_MAX_ALIGN_CELLS = 4_096  # 64 x 64 words in one clause (~0.1 s of this DP); beyond, the even split


def _align_evenly(m: int, n: int) -> list[list[int]]:
    """Chunk i covers the words in proportion to its position (each chunk at least one word
    while there are as many words as chunks)."""
    if n == 0:
        return [[] for _ in range(m)]
    if m <= n:
        return [list(range(i * n // m, (i + 1) * n // m)) for i in range(m)]
    return [[i * n // m] for i in range(m)]


def _split_chunk(symbols: list[str], word_ids: list[int], word_lens: list[int]) -> list[int]:
    """word index per symbol of one chunk covering ``word_ids`` (proportional to expected lengths)."""
    if not word_ids:
        return [-1] * len(symbols)
    weights = [word_lens[w] for w in word_ids]
    total, n = sum(weights), len(symbols)
    out, acc, k = [], 0.0, 0
    bounds = []
    for w in weights[:-1]:
        acc += w
        bounds.append(round(acc / total * n))
    for idx in range(n):
        while k < len(bounds) and idx >= bounds[k]:
            k += 1
        out.append(word_ids[k])
    return out


def text_to_phonemes(text: str, lexicon: Mapping[str, str] | None = None) -> PhonemeInput:
    """Text -> normalized text, phoneme symbols, word index per symbol, visemes, words.

    Raises ``TextError`` (quoting the text) for empty text, text over 4096 bytes, or
    text with nothing to pronounce; ``ValueError`` for a malformed lexicon."""
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    if len(text.encode("utf-8", errors="replace")) > MAX_TEXT_BYTES:
        raise TextError(f"text is {len(text.encode('utf-8', errors='replace'))} bytes, over {MAX_TEXT_BYTES}: "
                        f"{_short(text)}")
    if not text.strip():
        raise TextError(f"text is empty: {_short(text)}")
    lex = validate_lexicon(lexicon) if lexicon else {}
    norm = normalize(text)
    word_spans = _words_with_spans(norm)
    words = tuple(w for w, _ in word_spans)
    if not words:
        raise TextError(f"no pronounceable words in {_short(text)}")
    word_lens = [_expected_len(w) for w in words]

    clauses = espeak_clauses(norm)
    symbols: list[str] = []
    word_of: list[int] = []
    next_word = 0
    for ci, clause in enumerate(clauses):
        last = ci == len(clauses) - 1
        clause_end = clauses[ci + 1].start if not last else len(norm) + 1
        first_word = next_word
        while next_word < len(word_spans) and (last or word_spans[next_word][1] < clause_end):
            next_word += 1
        chunks = [_ipa_symbols(c) for c in clause.ipa.split(" ")]
        chunks = [c for c in chunks if c]
        clause_words = list(range(first_word, next_word))
        groups = _align([len(c) for c in chunks], [word_lens[w] for w in clause_words])
        for k, (chunk, group) in enumerate(zip(chunks, groups, strict=True)):
            if k and symbols and symbols[-1] != " ":
                symbols.append(" ")
                word_of.append(-1)
            symbols += chunk
            word_of += _split_chunk(chunk, [clause_words[g] for g in group], word_lens)
        if not chunks:
            continue
        terminator = clause.terminator
        if not terminator and not last:
            terminator = ","  # ellipsis or an unpunctuated clause break: a short pause, not glued words
        if terminator:
            symbols.append(terminator)
            word_of.append(-1)
        if terminator in ",;:" and terminator or (not last and clause.end_of_sentence):
            symbols.append(" ")
            word_of.append(-1)
    while symbols and symbols[-1] == " " and len(symbols) > 1 and symbols[-2] not in ",;:":
        symbols.pop()
        word_of.pop()
    if lex:
        symbols, word_of = _apply_lexicon(symbols, word_of, words, lex)
    if not any(s not in PUNCTUATION and s != " " and s not in MODIFIERS for s in symbols):
        raise TextError(f"nothing pronounceable in {_short(text)} (normalized: {_short(norm)})")
    return PhonemeInput(norm, tuple(symbols), tuple(word_of), viseme_sequence(symbols), words)


def _apply_lexicon(
    symbols: list[str], word_of: list[int], words: tuple[str, ...], lex: dict[str, tuple[str, ...]]
) -> tuple[list[str], list[int]]:
    """Replace each lexicon word's symbol run with the lexicon's pronunciation."""
    out_s: list[str] = []
    out_w: list[int] = []
    i = 0
    while i < len(symbols):
        w = word_of[i]
        entry = lex.get(words[w].lower()) if w >= 0 else None
        if entry is None:
            out_s.append(symbols[i])
            out_w.append(w)
            i += 1
            continue
        while i < len(symbols) and word_of[i] == w:
            i += 1
        out_s += entry
        out_w += [w] * len(entry)
    return out_s, out_w
