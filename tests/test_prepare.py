"""The preparer thread: lines that wait together are prepared in one batch, each caller gets what
preparing its line alone gives, and a line that cannot be prepared fails only its own caller.
Real model code (the tiny voice), real threads; batching is made deterministic by holding the
first batch until the other callers have queued."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import torch

from npc_voice.contracts import PhonemeInput, TextError
from npc_voice.engine.prepare import Preparer
from npc_voice.frontend import text_to_phonemes
from npc_voice.model import tiny_voice
from npc_voice.model.api import PreparedLine
from npc_voice.model.voice import SSMVoice

TEXTS = ["Halt!", "Who goes there?", "Move along, citizen.", "I used to be an adventurer like you.",
         "Fine weather today.", "Stay out of trouble."]


@pytest.fixture(scope="module")
def voice() -> SSMVoice:
    return tiny_voice(seed=0)


class HeldFirstBatch:
    """The voice, with its first ``prepare_batch`` held until ``release`` (the others then queue)."""

    def __init__(self, inner: SSMVoice) -> None:
        self.inner = inner
        self.name, self.version = inner.name, inner.version
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batch_sizes: list[int] = []

    def prepare_batch(self, phonemes: list[PhonemeInput], speeds: Sequence[float]) -> list[PreparedLine]:
        if not self.batch_sizes:
            self.entered.set()
            assert self.release.wait(30)
        self.batch_sizes.append(len(phonemes))
        return self.inner.prepare_batch(phonemes, speeds=list(speeds))


def submit_while_held(preparer: Preparer, model: Any, lines: list[PhonemeInput], speed: float = 1.0
                      ) -> list[Future[list[PreparedLine]]]:
    """The first line alone (held in the model), then the rest, queued behind it; then release."""
    first = preparer.submit(model, [lines[0]], speed)
    assert model.entered.wait(30)
    rest = [preparer.submit(model, [ph], speed) for ph in lines[1:]]
    model.release.set()
    return [first, *rest]


def test_lines_that_wait_together_are_prepared_in_one_batch_and_equal_preparing_alone(voice: SSMVoice) -> None:
    model = HeldFirstBatch(voice)
    lines = [text_to_phonemes(t, {}) for t in TEXTS]
    preparer = Preparer(max_batch=8)
    try:
        futures = submit_while_held(preparer, model, lines, speed=1.2)
        results = [f.result(timeout=30) for f in futures]
    finally:
        preparer.close()
    assert model.batch_sizes == [1, len(TEXTS) - 1]  # the held one, then all the others at once
    assert preparer.batches == 2 and preparer.lines == len(TEXTS)
    with torch.inference_mode():
        for ph, got in zip(lines, results, strict=True):
            (line,) = got
            alone = voice.prepare(ph, speed=1.2)
            assert line.text == ph.text and line.n_frames == alone.n_frames and line.words == alone.words
            torch.testing.assert_close(line.cond, alone.cond, atol=1e-5, rtol=1e-4)


def test_batches_hold_at_most_max_batch_lines(voice: SSMVoice) -> None:
    model = HeldFirstBatch(voice)
    lines = [text_to_phonemes(t, {}) for t in TEXTS * 2]
    preparer = Preparer(max_batch=4, cache_mb=0)  # every line prepared, even the ones said twice
    try:
        for f in submit_while_held(preparer, model, lines):
            f.result(timeout=30)
    finally:
        preparer.close()
    assert max(model.batch_sizes) <= 4 and sum(model.batch_sizes) == len(lines)


def test_a_line_that_cannot_be_prepared_fails_only_its_caller(voice: SSMVoice) -> None:
    model = HeldFirstBatch(voice)
    good = [text_to_phonemes(t, {}) for t in TEXTS[:4]]
    bad = PhonemeInput(text="snow", symbols=("☃",), word_of=(0,), visemes=("sil",), words=("snow",))
    preparer = Preparer()
    try:
        futures = submit_while_held(preparer, model, [good[0], good[1], bad, good[2], good[3]])
        with pytest.raises(TextError, match="☃"):
            futures[2].result(timeout=30)
        for f in futures[:2] + futures[3:]:
            (line,) = f.result(timeout=30)
            assert line.n_frames > 0
    finally:
        preparer.close()


def test_many_callers_at_once_each_get_their_own_lines(voice: SSMVoice) -> None:
    """Several threads, several pieces per call: every caller's pieces come back in its order."""
    preparer = Preparer(max_batch=4)
    calls = [[text_to_phonemes(t, {}) for t in TEXTS[i : i + 3]] for i in range(len(TEXTS) - 2)]
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda pieces: preparer.prepare(voice, pieces, 1.0), calls * 3))
    finally:
        preparer.close()
    for pieces, got in zip(calls * 3, results, strict=True):
        assert [line.text for line in got] == [ph.text for ph in pieces]


def test_a_closed_preparer_refuses_and_nothing_is_asked_of_it_for_no_lines(voice: SSMVoice) -> None:
    preparer = Preparer()
    assert preparer.prepare(voice, [], 1.0) == []  # no thread started for nothing
    preparer.close()
    with pytest.raises(RuntimeError, match="stopped"):
        preparer.prepare(voice, [text_to_phonemes("Halt!", {})], 1.0)


def test_a_line_said_again_comes_from_the_cache_within_its_budget(voice: SSMVoice) -> None:
    lines = [text_to_phonemes(t, {}) for t in TEXTS]
    with torch.inference_mode():
        sizes = [voice.prepare(ph).cond.numel() * 4 for ph in lines]
    # room for the three longest lines, not for all six
    budget_mb = sum(sorted(sizes)[-3:]) / (1 << 20)
    preparer = Preparer(max_batch=8, cache_mb=budget_mb)
    try:
        first = preparer.prepare(voice, lines[:2], 1.0)
        again = preparer.prepare(voice, lines[:2], 1.0)
        assert preparer.lines == 2 and preparer.cache_hits == 2  # nothing prepared the second time
        counts = preparer.counts  # what stats read: published by the preparer thread after its round
        assert (counts.lines_prepared, counts.cache_hits, counts.cache_lines) == (2, 2, 2)
        assert counts.cache_bytes == preparer.cache_bytes == sum(line.cond.numel() * 4 for line in first)
        for a, b in zip(first, again, strict=True):
            assert b.text == a.text and b.words == a.words and torch.equal(b.cond, a.cond)
        preparer.prepare(voice, lines[:1], 1.3)  # another speed is another line
        assert preparer.lines == 3 and preparer.cache_hits == 2
        for ph in lines[2:]:  # four more lines: the oldest ones leave the cache
            preparer.prepare(voice, [ph], 1.0)
        assert preparer.cache_bytes <= budget_mb * (1 << 20)
        prepared = preparer.lines
        preparer.prepare(voice, lines[:1], 1.0)
        assert preparer.lines == prepared + 1  # forgotten, so prepared again
        preparer.prepare(voice, lines[-1:], 1.0)
        assert preparer.lines == prepared + 1  # the latest is still there
    finally:
        preparer.close()


def test_no_cache_prepares_every_line() -> None:
    preparer = Preparer(cache_mb=0)
    voice = tiny_voice(seed=0)
    try:
        ph = text_to_phonemes(TEXTS[0], {})
        for _ in range(3):
            preparer.prepare(voice, [ph], 1.0)
        assert preparer.lines == 3 and preparer.cache_hits == 0 and preparer.cache_bytes == 0
    finally:
        preparer.close()
