"""One thread prepares every line of a process (encoder + durations), several lines in one batch.

Why: a line's preparation is ~40 small native ops (convolutions over a few dozen symbols and a
few hundred frames). Run on each caller's own thread, at 64 continuous streams six to eight of
them ran at once on the 2-vCPU VM beside the event loop and the engine process, and a line's
``say`` (frontend + preparation) took p99 160-166 ms. One owner thread takes whatever lines wait
when it comes round, groups them per voice and prepares up to ``max_batch`` of similar length in
one ``prepare_batch``: the per-op cost is paid once per batch (one torch thread: 6.9 ms a line
alone, 4.3 ms a line in batches of 4-8, ``bench/prepare_batch.py``). ``say`` measured p99
86-89 ms with it against 160-166 ms without at 64 streams, in an A/B whose two arms may have run
the same checkout (bench/README.md, 2026-12-06: "a broken A/B corrected"), so treat that figure
as unconfirmed; the per-line saving above is measured directly.

Lines said again come from a cache (``cache_mb``, server ``prepare_cache_mb``; keyed by voice name,
checkpoint version, the line's phonemes and speed; least recently said out first): games repeat
barks, and at 64 continuous streams drawn from the load test's 16 barks the preparer had cost the
daemon 0.25 of its 0.51 cores, on the same two vCPUs as the engine thread. With the cache, in
three pairs against ``prepare_cache_mb: 0``: first audio p50 34-54 against 173-439 ms, p99
108-296 against 661-1394 ms, 67.5-70.8x against 52.3-62.3x real time (bench/README.md, "Collector
pauses; lines said again"). The cache is the preparer thread's own; callers still hand it their
lines and wait, so a line waits behind a batch in progress either way.

Faults stay with their line: when a batch raises, its lines are prepared again one caller at a
time, and only the caller whose text or model fails gets the error.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from npc_voice.contracts import PhonemeInput
from npc_voice.model.api import PreparedLine, VoiceModel

log = logging.getLogger(__name__)

MAX_BATCH = 8  # lines per prepare_batch: past ~8 padding to the longest costs more than it saves
CACHE_MB = 64.0  # prepared lines kept for lines said again (barks): ~700 two-second lines

_Key = tuple[str, str, PhonemeInput, float]  # voice name, checkpoint version, the line's phonemes, speed


def _key(model: VoiceModel, piece: PhonemeInput, speed: float) -> _Key:
    return model.name, model.version, piece, speed


def _nbytes(line: PreparedLine) -> int:
    """What a cached line counts against the budget: its conditioning frames (the marks are small)."""
    return line.cond.numel() * line.cond.element_size()


@dataclass(frozen=True)
class PrepareCounts:
    """What the preparer has done so far, published by its thread before it hands a group of
    lines back (readers take the reference, never the preparer's own fields)."""

    lines_prepared: int = 0  # lines run through the encoder (prepare_batch)
    cache_hits: int = 0  # lines served from the cache instead
    cache_lines: int = 0  # lines held in the cache now
    cache_bytes: int = 0  # their conditioning frames' bytes (bounded by cache_mb)


@dataclass
class _Job:
    model: VoiceModel
    pieces: list[PhonemeInput]
    speed: float
    future: Future[list[PreparedLine]] = field(default_factory=Future)


class Preparer:
    """``prepare(model, pieces, speed)`` from any thread; the work runs on this preparer's
    thread (started on first use, a daemon thread). Results equal ``model.prepare`` of each piece
    up to the float rounding of batch composition."""

    def __init__(self, max_batch: int = MAX_BATCH, name: str = "npc-voice-prepare", cache_mb: float = CACHE_MB) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not cache_mb >= 0:
            raise ValueError(f"cache_mb must be >= 0, got {cache_mb}")
        self.max_batch = max_batch
        # lines prepared before, least recently said first; owned by the preparer thread
        self._cache: OrderedDict[_Key, PreparedLine] = OrderedDict()
        self._cache_budget = int(cache_mb * (1 << 20))
        self.cache_bytes = 0  # owner thread writes; read for tests
        self.cache_hits = 0  # pieces served from the cache (owner thread writes; read for stats/tests)
        self._name = name
        self._inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # submit and close in one order: a job is either queued before the stop mark (and done)
        # or refused, never left behind it in a queue nobody reads
        self._lifecycle = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # prepare_batch calls made (owner thread writes; read for stats/tests)
        self.lines = 0
        self.counts = PrepareCounts()  # published by the owner thread (see PrepareCounts)

    def prepare(self, model: VoiceModel, pieces: list[PhonemeInput], speed: float) -> list[PreparedLine]:
        """Block until ``pieces`` are prepared; raises what preparing them alone would raise."""
        if not pieces:
            return []
        return self.submit(model, pieces, speed).result()

    def submit(self, model: VoiceModel, pieces: list[PhonemeInput], speed: float) -> Future[list[PreparedLine]]:
        job = _Job(model, list(pieces), speed)
        with self._lifecycle:
            if self._closed:
                job.future.set_exception(RuntimeError("the line preparer has stopped"))
                return job.future
            if self._thread is None:  # started on first use
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._inbox.put(job)
        return job.future

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread once the lines already submitted are done; later submits fail."""
        with self._lifecycle:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._inbox.put(None)
        if thread is not None:
            thread.join(timeout)

    # ---- the owner thread --------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._inbox.get()
            if first is None:
                break
            jobs = [first]
            n = len(first.pieces)
            while n < self.max_batch:  # whatever else waits right now, up to one batch's worth
                try:
                    job = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
                n += len(job.pieces)
            by_model: dict[int, list[_Job]] = {}
            for job in jobs:
                by_model.setdefault(id(job.model), []).append(job)
            with torch.inference_mode():
                for group in by_model.values():
                    self._prepare_group(group)

    def _remember(self, key: _Key, line: PreparedLine) -> None:
        """Keep ``line`` for the next time it is said, within the byte budget (oldest out first)."""
        size = _nbytes(line)
        if size > self._cache_budget or key in self._cache:
            return
        self._cache[key] = line
        self.cache_bytes += size
        while self.cache_bytes > self._cache_budget:
            _, old = self._cache.popitem(last=False)
            self.cache_bytes -= _nbytes(old)

    def _prepare_group(self, jobs: list[_Job]) -> None:
        """One voice's jobs: pieces said before from the cache, the rest sorted by length and
        prepared ``max_batch`` at a time."""
        model = jobs[0].model
        results: dict[int, list[PreparedLine | None]] = {id(j): [None] * len(j.pieces) for j in jobs}
        items = []
        for job in jobs:
            for i, p in enumerate(job.pieces):
                key = _key(model, p, job.speed)
                cached = self._cache.get(key)
                if cached is None:
                    items.append((job, i, p))
                else:
                    self._cache.move_to_end(key)
                    results[id(job)][i] = cached
                    self.cache_hits += 1
        items.sort(key=lambda it: len(it[2].symbols))
        failed: set[int] = set()
        for start in range(0, len(items), self.max_batch):
            chunk = [it for it in items[start : start + self.max_batch] if id(it[0]) not in failed]
            if not chunk:
                continue
            try:
                lines = model.prepare_batch([p for _, _, p in chunk], speeds=[job.speed for job, _, _ in chunk])
            except Exception:
                # someone's line cannot be prepared: each job of the chunk alone, so that only its owner fails
                for job in {id(job): job for job, _, _ in chunk}.values():
                    if id(job) in failed:
                        continue
                    try:
                        alone = model.prepare_batch(job.pieces, speeds=[job.speed] * len(job.pieces))
                    except BaseException as e:
                        failed.add(id(job))
                        job.future.set_exception(e)
                    else:
                        results[id(job)] = list(alone)
                continue
            self.batches += 1
            self.lines += len(chunk)
            for (job, i, piece), line in zip(chunk, lines, strict=True):
                results[id(job)][i] = line
                self._remember(_key(model, piece, job.speed), line)
        # published before any caller hears back: a caller that reads stats next sees its own lines
        self.counts = PrepareCounts(self.lines, self.cache_hits, len(self._cache), self.cache_bytes)
        for job in jobs:
            if id(job) not in failed:
                done = [line for line in results[id(job)] if line is not None]
                assert len(done) == len(job.pieces), "every piece of a job is prepared or the job failed"
                job.future.set_result(done)
