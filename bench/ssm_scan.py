"""The decoder's state scan on CPU: along headdim (``_scan_packed_kernel``) against along d_state
(the loop it replaced), alone and inside the shipped voice's decoder step, paired.

    .venv/bin/python bench/ssm_scan.py [--batches 1 16 32] [--frames 8] [--repeats 30]

Both loops do the same multiply-adds (``h = decay * h + dt * x * B``, ``y = h @ C``). Along d_state
each state row [d_state] is one 16-wide vector and every frame ends in a horizontal sum for y;
along headdim a head's state is walked transposed, [d_state, headdim], and y accumulates per lane.
Medians of one thread's CPU time; the two variants alternate call by call, so the VM's speed swings
hit both alike.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import npc_voice_kernels.ssm_step_cpu as cpu
import numba
import numpy as np
import torch

from npc_voice.model import load_voice


def _scan_along_state(
    xc: np.ndarray, dts: np.ndarray, decay: np.ndarray, gz: np.ndarray, d: np.ndarray, ssm: np.ndarray,
    slots: np.ndarray, layer: int, out: np.ndarray,
) -> None:
    """The scan as it was before: the inner loop along d_state, one horizontal sum per row and frame."""
    n_rows, n_frames = xc.shape[0], xc.shape[1]
    nheads, headdim, d_state = ssm.shape[2], ssm.shape[3], ssm.shape[4]
    d_inner = nheads * headdim
    for b in range(n_rows):
        s = slots[b]
        for h in range(nheads):
            hs = ssm[s, layer, h]
            dh = d[h]
            for p in range(headdim):
                i = h * headdim + p
                row = hs[p]
                for k in range(n_frames):
                    xv = xc[b, k, i]
                    u = dts[b, k, h] * xv
                    dk = decay[b, k, h]
                    bk = xc[b, k, d_inner : d_inner + d_state]
                    ck = xc[b, k, d_inner + d_state :]
                    y = np.float32(0.0)
                    for n in range(d_state):
                        val = row[n] * dk + u * bk[n]
                        row[n] = val
                        y += val * ck[n]
                    out[b, k, i] = (y + dh * xv) * gz[b, k, i]


along_state: Any = numba.njit(nogil=True, fastmath=True)(_scan_along_state)


def paired(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median CPU seconds of each function, called alternately."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up (and numba compilation)
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.thread_time()
            fn()
            times[name].append(time.thread_time() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def measure(voice: Any, batch: int, frames: int, repeats: int, kernels: dict[str, Any]) -> tuple[
        dict[str, float], dict[str, float]]:
    """(one layer's scan, the whole decoder step): median CPU seconds per kernel."""
    rng = np.random.default_rng(0)
    cfg = voice.cfg
    shape = (batch, frames)
    xc = rng.standard_normal((*shape, cfg.conv_dim)).astype(np.float32)
    dts = (rng.random((*shape, cfg.nheads)) * 0.1).astype(np.float32)
    decay = np.exp(-3.0 * dts).astype(np.float32)
    gz = rng.standard_normal((*shape, cfg.d_inner)).astype(np.float32)
    d = rng.standard_normal(cfg.nheads).astype(np.float32)
    ssm = rng.standard_normal((batch + 1, cfg.n_layers, cfg.nheads, cfg.headdim, cfg.d_state)).astype(np.float32)
    slots = np.arange(1, batch + 1)
    out = np.empty((*shape, cfg.d_inner), dtype=np.float32)
    state = voice.new_state(batch + 1)
    cond = torch.randn(batch, frames, voice.d_cond)
    rows = torch.arange(1, batch + 1)
    shipped = cpu._scan_packed

    def scan(kernel: Any) -> Callable[[], object]:
        return lambda: kernel(xc, dts, decay, gz, d, ssm, slots, 0, out)

    def decoder(kernel: Any) -> Callable[[], object]:
        def run() -> object:
            cpu._scan_packed = kernel
            try:
                return voice.step_params(state, rows, cond)
            finally:
                cpu._scan_packed = shipped
        return run

    return (paired({name: scan(k) for name, k in kernels.items()}, repeats),
            paired({name: decoder(k) for name, k in kernels.items()}, repeats))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 32])
    p.add_argument("--frames", type=int, default=8, help="frames per call (the engine's K)")
    p.add_argument("--repeats", type=int, default=30)
    a = p.parse_args()
    torch.set_num_threads(1)
    voice = load_voice(None)
    kernels = {"along headdim": cpu._scan_packed, "along d_state": along_state}
    cfg = voice.cfg
    print(f"voice {voice.name}: {cfg.n_layers} layers, {cfg.nheads} heads x {cfg.headdim} x d_state {cfg.d_state}; "
          f"K={a.frames}, one thread, CPU time (medians of {a.repeats}, alternating)")
    for batch in a.batches:
        scan, step = measure(voice, batch, a.frames, a.repeats, kernels)
        new, old = (scan[n] * 1e6 for n in kernels)
        dnew, dold = (step[n] * 1e3 for n in kernels)
        print(f"batch {batch:3d}: one layer's scan {new:7.1f} us along headdim, {old:7.1f} along d_state "
              f"({old / new:.1f}x); decoder step {dnew:.2f} ms vs {dold:.2f} ms ({1 - dnew / dold:.0%} less)")


if __name__ == "__main__":
    main()
