"""BlockResampler: the engine's fast path for ``npc_voice.audio.resample.StreamResampler``.

Same filter, same samples, same chunking (the audio module's resampler is the reference and a
test keeps the two equal), computed as one small matrix product per chunk instead of a gather
per output sample: about 70-110 us per 1024-sample chunk instead of 0.5-3 ms, which matters
because the engine resamples every stream every tick.

Why it works: with L/M = out/in in lowest terms, output n = q*L + r reads the inputs around
q*M + floor(r*M/L) with filter phase r*M mod L. So every block of L outputs applies the same
matrix W [L, window] to a window of inputs starting at q*M: out_block(q) = W @ x[q*M - half + 1 :].
"""
from __future__ import annotations

import functools

import numpy as np

from npc_voice.audio.resample import StreamResampler


@functools.cache
def _filter(in_rate: int, out_rate: int) -> tuple[int, int, int, int, np.ndarray]:
    """(L, M, half, window, W^T [window, L]) for a rate pair: built once, shared by every stream."""
    ref = StreamResampler(in_rate, out_rate)  # validates the rates; its filter is the reference
    if ref.identity:
        raise ValueError(f"no resampling needed for {in_rate} -> {out_rate} Hz")
    up, down = ref.up, ref.down
    h, half = ref._h, ref._half  # [L, 2 * half] taps per output phase
    shift = (np.arange(up) * down) // up  # first input of output r, relative to the block's start
    window = int(shift[-1]) + 2 * half
    w = np.zeros((up, window), dtype=np.float64)
    for i in range(up):
        w[i, shift[i] : shift[i] + 2 * half] = h[(i * down) % up]
    w_t = np.ascontiguousarray(w.T, dtype=np.float32)
    w_t.flags.writeable = False  # shared
    return up, down, half, window, w_t


class BlockResampler:
    """Streaming mono resampler: ``process(chunk) -> out``, ``flush() -> tail``.

    Output equals ``StreamResampler(in_rate, out_rate)`` fed the same chunks (float32
    rounding aside), including the total after flush: round(total_in * out / in)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.L, self.M, self.half, self.window, self.w_t = _filter(in_rate, out_rate)
        # Input samples from absolute index ``buf_start`` on (before index 0 the signal is zero):
        # ``valid`` of them, then ``window`` zeros, so every window of the outputs asked for lies
        # inside ``buf`` (inputs not there yet only meet zero taps of the outputs kept, or flush).
        self.valid = self.half - 1
        self.buf = np.zeros(self.valid + self.window, dtype=np.float32)
        self.buf_start = -(self.half - 1)
        self.total_in = 0
        self.total_out = 0
        self.flushed = False

    def process(self, x: np.ndarray) -> np.ndarray:
        return process_many([self], [x])[0]

    def flush(self) -> np.ndarray:
        """The remaining outputs (inputs past the end are zeros)."""
        if self.flushed:
            return np.zeros(0, dtype=np.float32)
        self.flushed = True
        return self._finish(self._windows((2 * self.total_in * self.L + self.M) // (2 * self.M)))

    def _feed(self, x: np.ndarray) -> int:
        """Append ``x``; the output index up to which outputs are now determined."""
        if self.flushed:
            raise RuntimeError("BlockResampler.process after flush()")
        n = len(x)
        self.total_in += n
        buf = np.empty(self.valid + n + self.window, dtype=np.float32)
        buf[: self.valid] = self.buf[: self.valid]
        buf[self.valid : self.valid + n] = x
        buf[self.valid + n :] = 0.0
        self.buf, self.valid = buf, self.valid + n
        last = self.total_in - 1 - self.half  # output n needs inputs up to floor(n * M / L) + half
        return 0 if last < 0 else (last * self.L) // self.M + 1

    def _windows(self, n_end: int) -> tuple[np.ndarray, int, int] | None:
        """The input windows [blocks, window] that produce outputs [total_out, n_end), and the
        slice of their flattened products to keep (None: no new output)."""
        if n_end <= self.total_out:
            return None
        q0, q1 = self.total_out // self.L, -(-n_end // self.L)  # blocks [q0, q1) hold the outputs
        start = q0 * self.M - self.half + 1 - self.buf_start
        need = (q1 - 1 - q0) * self.M + self.window
        seg = self.buf[start : start + need]  # within the zeros after the valid inputs at most
        # [q1 - q0, window]: windows every M inputs, a view (as sliding_window_view(seg, window)[::M]
        # or as_strided give, at a fifth of their per-call cost: the engine resamples every stream
        # every tick)
        step = seg.strides[0]
        windows = np.ndarray((q1 - q0, self.window), dtype=np.float32, buffer=seg, strides=(self.M * step, step))
        return windows, self.total_out - q0 * self.L, n_end - q0 * self.L

    def _finish(self, plan: tuple[np.ndarray, int, int] | None, products: np.ndarray | None = None) -> np.ndarray:
        """Keep the plan's outputs (``products``: its windows @ w_t, computed here if not given)."""
        if plan is None:
            return np.zeros(0, dtype=np.float32)
        windows, lo, hi = plan
        if products is None:
            products = windows @ self.w_t
        out = products.reshape(-1)[lo:hi]
        self.total_out += hi - lo
        keep = (self.total_out // self.L) * self.M - self.half + 1 - self.buf_start
        if keep > 0:
            self.buf = self.buf[keep:]
            self.buf_start += keep
            self.valid -= keep
        return out


def process_many(resamplers: list[BlockResampler], chunks: list[np.ndarray]) -> list[np.ndarray]:
    """``r.process(x)`` for many streams at once: resamplers of the same rate pair share one
    matrix product per call (the engine resamples a whole batch per output rate each tick)."""
    plans = [r._windows(r._feed(x)) for r, x in zip(resamplers, chunks, strict=True)]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (r, plan) in enumerate(zip(resamplers, plans, strict=True)):
        if plan is not None:
            groups.setdefault((r.L, r.M), []).append(i)
    products: list[np.ndarray | None] = [None] * len(resamplers)
    for members in groups.values():
        blocks = [plans[i][0] for i in members]  # type: ignore[index]
        stacked = np.concatenate(blocks) @ resamplers[members[0]].w_t  # [sum of blocks, L]: one product
        bounds = np.cumsum([0, *(len(b) for b in blocks)])
        for j, i in enumerate(members):
            products[i] = stacked[bounds[j] : bounds[j + 1]]
    return [r._finish(plan, prod) for r, plan, prod in zip(resamplers, plans, products, strict=True)]
