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

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from npc_voice.audio.resample import StreamResampler


class BlockResampler:
    """Streaming mono resampler: ``process(chunk) -> out``, ``flush() -> tail``.

    Output equals ``StreamResampler(in_rate, out_rate)`` fed the same chunks (float32
    rounding aside), including the total after flush: round(total_in * out / in)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        ref = StreamResampler(in_rate, out_rate)  # validates the rates; its filter is the reference
        if ref.identity:
            raise ValueError(f"no resampling needed for {in_rate} -> {out_rate} Hz")
        self.L, self.M = ref.up, ref.down
        h, half = ref._h, ref._half  # [L, 2 * half] taps per output phase
        r = np.arange(self.L)
        shift = (r * self.M) // self.L  # first input of output r, relative to the block's start
        self.half = half
        self.window = int(shift[-1]) + 2 * half
        w = np.zeros((self.L, self.window), dtype=np.float64)
        for i in range(self.L):
            w[i, shift[i] : shift[i] + 2 * half] = h[(i * self.M) % self.L]
        self.w_t = np.ascontiguousarray(w.T, dtype=np.float32)  # [window, L]
        # Input samples from absolute index ``buf_start`` on; before index 0 the signal is zero.
        self.buf = np.zeros(half - 1, dtype=np.float32)
        self.buf_start = -(half - 1)
        self.total_in = 0
        self.total_out = 0
        self.flushed = False

    def process(self, x: np.ndarray) -> np.ndarray:
        if self.flushed:
            raise RuntimeError("BlockResampler.process after flush()")
        self.total_in += len(x)
        self.buf = np.concatenate([self.buf, np.asarray(x, dtype=np.float32)])
        last = self.total_in - 1 - self.half  # output n needs inputs up to floor(n * M / L) + half
        return self._emit(0 if last < 0 else (last * self.L) // self.M + 1)

    def flush(self) -> np.ndarray:
        """The remaining outputs (inputs past the end are zeros)."""
        if self.flushed:
            return np.zeros(0, dtype=np.float32)
        self.flushed = True
        return self._emit((2 * self.total_in * self.L + self.M) // (2 * self.M))

    def _emit(self, n_end: int) -> np.ndarray:
        if n_end <= self.total_out:
            return np.zeros(0, dtype=np.float32)
        q0, q1 = self.total_out // self.L, -(-n_end // self.L)  # blocks [q0, q1) hold the outputs
        start = q0 * self.M - self.half + 1 - self.buf_start
        need = (q1 - 1 - q0) * self.M + self.window
        seg = self.buf[start : start + need]
        if len(seg) < need:  # inputs not there yet only meet zero taps of the rows we keep (or flush)
            seg = np.concatenate([seg, np.zeros(need - len(seg), dtype=np.float32)])
        windows = sliding_window_view(seg, self.window)[:: self.M]  # [q1 - q0, window]
        out = (windows @ self.w_t).reshape(-1)[self.total_out - q0 * self.L : n_end - q0 * self.L]
        self.total_out = n_end
        keep = (self.total_out // self.L) * self.M - self.half + 1 - self.buf_start
        if keep > 0:
            self.buf = self.buf[keep:]
            self.buf_start += keep
        return out
