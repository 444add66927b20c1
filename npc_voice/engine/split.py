"""RowSplitter: one CPU model call's rows stepped by the engine thread and helper threads together.

The engine thread still makes every decision and owns every piece of state; a helper only runs
the model's step over a slice of one call's rows (disjoint state slots) and hands the audio back,
the way an intra-op thread pool would. The CPU step is compiled code that releases the GIL
(numba ``nogil`` kernels and torch's BLAS), so two threads stepping 16 rows each take about the
time of one stepping 16 (bench/README.md).

A call's rows are cut into chunks; the engine thread and the helpers claim chunks one at a time
until none are left, so a helper that starts late (its core busy with the gRPC process) or not at
all costs the call nothing: the engine thread steps what nobody claimed, and it waits only for a
chunk a helper is running. A failure in any chunk fails the call (the engine fails that batch).
"""
from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections.abc import Callable

import torch

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (slots, cond, controls) -> pcm

MIN_CHUNK_ROWS = 16  # smaller chunks cost more per row (8 rows ~13 % more than 16: bench/model_step_cost.py)
CHUNKS_PER_THREAD = 2  # more chunks than threads: whoever is free takes the next one


def default_step_threads() -> int:
    """Threads stepping one CPU call (the engine thread included): 2 on a 2-core machine (the other
    core also serves gRPC; a helper that cannot run costs nothing, see the module doc), up to 4."""
    cores = os.cpu_count() or 1
    return 1 if cores < 2 else min(4, cores // 2 + 1)


def chunk_bounds(rows: int, threads: int) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) of one call: up to CHUNKS_PER_THREAD per thread, none under
    MIN_CHUNK_ROWS; one range (no split) when the rows are too few."""
    n = min(threads * CHUNKS_PER_THREAD, rows // MIN_CHUNK_ROWS)
    if n < 2 or threads < 2:
        return [(0, rows)]
    base, extra = divmod(rows, n)
    bounds, lo = [], 0
    for i in range(n):
        hi = lo + base + (1 if i < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


class _Call:
    """One model call cut into chunks; each chunk is claimed by exactly one thread."""

    def __init__(self, fn: StepFn, slots: torch.Tensor, cond: torch.Tensor, controls: torch.Tensor,
                 bounds: list[tuple[int, int]]) -> None:
        self.fn, self.slots, self.cond, self.controls, self.bounds = fn, slots, cond, controls, bounds
        self.out: list[torch.Tensor | None] = [None] * len(bounds)
        self.error: BaseException | None = None
        self.serial_s = 0.0  # the chunks' wall times added up: what the call takes on one thread
        self._claims = itertools.count()  # next() is atomic: a chunk index goes to one thread
        self._left = len(bounds)
        self._lock = threading.Lock()
        self._done = threading.Event()

    def work(self) -> None:
        """Step chunks until every one is claimed (any thread; returns at once if none is left)."""
        while (i := next(self._claims)) < len(self.bounds):
            lo, hi = self.bounds[i]
            pcm: torch.Tensor | None = None
            error: BaseException | None = None
            t0 = time.perf_counter()
            try:
                with torch.inference_mode():
                    pcm = self.fn(self.slots[lo:hi], self.cond[lo:hi], self.controls[lo:hi])
            except BaseException as e:  # noqa: BLE001  (handed to the engine thread, which fails the batch)
                error = e
            spent = time.perf_counter() - t0
            with self._lock:
                self.serial_s += spent
                self.out[i] = pcm
                if error is not None and self.error is None:
                    self.error = error
                self._left -= 1
                if self._left == 0:
                    self._done.set()

    def result(self) -> torch.Tensor:
        self._done.wait()  # only chunks some thread is stepping now are left
        if self.error is not None:
            raise self.error
        return torch.cat([pcm for pcm in self.out if pcm is not None])


class RowSplitter:
    """``run(fn, slots, cond, controls)`` = ``fn(slots, cond, controls)``, its rows stepped by
    ``threads`` threads (the caller and ``threads - 1`` helpers). Calls come from one thread."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._helpers: list[threading.Thread] = []  # started by the first call that splits
        self._closed = False
        self.calls_split = 0  # calls whose rows went out in chunks (the caller's thread only)
        self.last_serial_s: float | None = None  # the last call's chunk times added up (None: not split)

    def run(self, fn: StepFn, slots: torch.Tensor, cond: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        self.last_serial_s = None
        bounds = chunk_bounds(int(slots.shape[0]), self.threads)
        if len(bounds) < 2 or self._closed:
            return fn(slots, cond, controls)
        if not self._helpers:
            self._helpers = [threading.Thread(target=self._serve, name=f"npc-voice-step-{i + 1}", daemon=True)
                             for i in range(self.threads - 1)]
            for t in self._helpers:
                t.start()
        call = _Call(fn, slots, cond, controls, bounds)
        self.calls_split += 1
        for _ in range(min(len(self._helpers), len(bounds) - 1)):
            self._calls.put(call)
        call.work()
        pcm = call.result()
        self.last_serial_s = call.serial_s
        return pcm

    def _serve(self) -> None:
        torch.set_grad_enabled(False)
        while (call := self._calls.get()) is not None:
            call.work()  # a call already finished by the others: nothing left to claim

    def close(self) -> None:
        """Stop the helpers (the caller's thread steps alone from now on)."""
        self._closed = True
        for _ in self._helpers:
            self._calls.put(None)
        for t in self._helpers:
            t.join(timeout=5.0)
        self._helpers = []
