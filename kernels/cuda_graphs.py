"""Fixed batch-size buckets and CUDA-graph replay of a batched step.

A decode step over B streams is a few small kernels per layer; at small B the
launch overhead dominates. ``GraphedStep`` captures the step once per bucket size
(1, 2, 4, ... by default) over static input buffers and replays it: the engine
copies its rows in, padding rows point at scratch slot 0, one graph launch runs
every layer. Every bucket is captured up front by ``capture_all`` (the engine does it
at start-up, on its own thread, before the first tick); a call never captures, so no
tick pays a capture. On CPU it calls the step directly, unpadded: padding only pays
where launches are expensive. Mode "padded" runs the same bucket/padding logic and the
same up-front warm-up eagerly (what the graphs replay), so it is testable without a GPU.

Engine-facing API::

    step = GraphedStep(lambda slots, cond, controls: model.step(pool, slots, cond, controls),
                       device=model.device)
    step.capture_all(cond[:1], controls[:1])  # at start-up: every bucket, largest first
    pcm = step(slots, cond, controls)   # [n, ...]; n = len(slots) <= step.buckets[-1]

The step function must read and write only tensors whose storage stays put (the
state pool: allocate it once, never re-allocate while graphs exist) and the
arguments it is given; it must not synchronize with the host (no ``.item()``,
no data-dependent shapes). Its first argument is the ``[B]`` int64 slot tensor,
the others are ``[B, ...]`` tensors; it returns one ``[B, ...]`` tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

log = logging.getLogger(__name__)

DEFAULT_BUCKETS: tuple[int, ...] = tuple(2**i for i in range(13))  # 1 .. 4096

StepFn = Callable[..., torch.Tensor]


def bucket_for(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
    """The smallest bucket that holds ``n`` rows. ``buckets`` must be ascending."""
    if n < 1:
        raise ValueError(f"batch size must be >= 1, got {n}")
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"batch size {n} exceeds the largest bucket {buckets[-1]}; split the batch")


def check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    """Validate a bucket list (positive, strictly ascending) and return it as a tuple."""
    out = tuple(int(b) for b in buckets)
    if not out or out[0] < 1 or any(a >= b for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"buckets must be positive and strictly ascending, got {list(buckets)}")
    return out


def pad_rows(t: torch.Tensor, size: int, fill_from_last: bool = True) -> torch.Tensor:
    """``t`` [n, ...] padded to [size, ...] along dim 0.

    Padding repeats the last row (real, finite values: no 0-pitch or 0-divides in
    padding rows) or, with ``fill_from_last=False``, zeros (used for slots, so
    padding rows point at scratch slot 0)."""
    n = t.shape[0]
    if n > size:
        raise ValueError(f"cannot pad {n} rows down to {size}")
    if n == size:
        return t
    out = t.new_zeros((size, *t.shape[1:]))
    out[:n] = t
    if fill_from_last and n > 0:
        out[n:] = t[n - 1]
    return out


def pad_slots(slots: torch.Tensor, size: int) -> torch.Tensor:
    """Slot indices [n] padded with scratch slot 0 to [size]."""
    return pad_rows(slots, size, fill_from_last=False)


class _Captured:
    """One bucket: static inputs, the captured graph and its static output."""

    def __init__(self, slots: torch.Tensor, inputs: list[torch.Tensor], graph: torch.cuda.CUDAGraph, out: torch.Tensor):
        self.slots = slots  # [bucket] int64, padding = 0
        self.inputs = inputs  # each [bucket, ...]
        self.graph = graph
        self.out = out  # [bucket, ...], overwritten by every replay


class GraphedStep:
    """Run ``fn(slots, *inputs)`` through per-bucket CUDA graphs (eager on CPU).

    ``fn``: see the module docstring. ``device``: where inputs live.
    ``mode``: "auto" (graphs on CUDA, eager elsewhere), "graphs", "eager" (call
    ``fn`` as is) or "padded" (pad to the bucket and call ``fn`` eagerly).
    In modes "graphs" and "padded" ``capture_all`` must have run before the first
    call (a call with a bucket not captured raises: it never captures in passing);
    graphs share one memory pool. The result is a fresh tensor with the first ``n``
    output rows.
    """

    MODES = ("auto", "graphs", "eager", "padded")

    def __init__(
        self,
        fn: StepFn,
        device: torch.device | str,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        mode: str = "auto",
        warmup_iters: int = 2,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.fn = fn
        self.device = torch.device(device)
        self.buckets = check_buckets(buckets)
        if mode == "auto":
            mode = "graphs" if self.device.type == "cuda" else "eager"
        if mode == "graphs" and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {self.device}")
        self.mode = mode
        self.warmup_iters = warmup_iters
        self._graphs: dict[int, _Captured] = {}  # mode "graphs": bucket -> its graph
        self._ready: set[int] = set()  # buckets captured (mode "padded": warmed up)
        self._pool: Any = None  # torch.cuda graph pool handle, shared by all buckets

    @property
    def max_batch(self) -> int:
        return self.buckets[-1]

    def __call__(self, slots: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        n = int(slots.shape[0])
        for i, t in enumerate(inputs):
            if t.shape[0] != n:
                raise ValueError(f"input {i} has {t.shape[0]} rows, slots has {n}")
        if self.mode == "eager":
            return self.fn(slots, *inputs)
        bucket = bucket_for(n, self.buckets)
        if bucket not in self._ready:
            raise RuntimeError(f"batch bucket {bucket} was not captured: call capture_all at start-up "
                               "(a step never captures, so no tick pays for it)")
        if self.mode == "padded":
            return self.fn(pad_slots(slots, bucket), *(pad_rows(t, bucket) for t in inputs))[:n].clone()
        cap = self._graphs[bucket]
        cap.slots[:n].copy_(slots)
        cap.slots[n:].zero_()
        for static, t in zip(cap.inputs, inputs, strict=True):
            static[:n].copy_(t)
            if n < bucket:
                static[n:].copy_(t[n - 1 : n].expand_as(static[n:]))
        cap.graph.replay()
        return cap.out[:n].clone()

    def capture_all(self, *inputs: torch.Tensor) -> None:
        """Capture every bucket now, largest first (so the shared pool is sized once). ``inputs``:
        at least one row of each input after the slots, the template for shapes and dtypes. Every
        captured row points at scratch slot 0, so capturing writes only the scratch slot's state.
        Mode "padded" runs the same warm-up calls without capturing; mode "eager" needs nothing."""
        if self.mode == "eager":
            return
        for bucket in sorted(self.buckets, reverse=True):
            if bucket in self._ready:
                continue
            static_slots = torch.zeros(bucket, dtype=torch.int64, device=self.device)
            static_inputs = [pad_rows(t[:1].to(self.device), bucket).clone() for t in inputs]
            if self.mode == "graphs":
                self._graphs[bucket] = self._capture(static_slots, static_inputs)
            else:
                for _ in range(self.warmup_iters):
                    self.fn(static_slots, *static_inputs)
            self._ready.add(bucket)

    def _capture(self, static_slots: torch.Tensor, static_inputs: list[torch.Tensor]) -> _Captured:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up off the default stream, as capture requires
            for _ in range(self.warmup_iters):
                self.fn(static_slots, *static_inputs)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self.fn(static_slots, *static_inputs)
        log.info("captured CUDA graph for batch bucket %d", static_slots.shape[0])
        return _Captured(static_slots, static_inputs, graph, out)
