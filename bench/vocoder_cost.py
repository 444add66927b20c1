"""Vocoder cost per frame per stream at several batch sizes (CPU threads as given).

    .venv/bin/python bench/vocoder_cost.py [--threads 2] [--batches 1 64 512] [--frames 1]
"""
from __future__ import annotations

import argparse
import time

import torch

from npc_voice.audio import features as F
from npc_voice.audio.vocoder import Vocoder


def measure(voc: Vocoder, batch: int, frames: int, repeats: int) -> float:
    """Median seconds for one ``step`` of ``frames`` frames over ``batch`` streams."""
    gen = torch.Generator().manual_seed(0)
    params = torch.randn(batch, frames, F.FEATURE_DIM, generator=gen)
    params[..., F.LF0] = 4.8 + 0.2 * params[..., F.LF0]
    params[..., F.VUV] = (params[..., F.VUV] > 0).float()
    params[..., F.ENV] = -5.0 + params[..., F.ENV]
    params[..., F.AP] = -20.0 + 5.0 * params[..., F.AP]
    controls = torch.tensor([1.0, 1.0, 0.0, 1.0]).repeat(batch, 1)
    state = voc.new_state(batch + 1)
    slots = torch.arange(1, batch + 1)
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        voc.step(state, slots, params, controls)
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512])
    p.add_argument("--frames", type=int, default=1, help="frames per step call (K)")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    voc = Vocoder()
    print(f"threads={args.threads} frames/call={args.frames} (one frame = {F.HOP / F.SAMPLE_RATE * 1e3:.1f} ms audio)")
    for b in args.batches:
        t = measure(voc, b, args.frames, args.repeats)
        per = t / (b * args.frames) * 1e3
        print(f"batch {b:4d}: {t * 1e3:8.2f} ms per call, {per:.4f} ms per frame per stream, "
              f"real-time streams on this budget: {F.HOP / F.SAMPLE_RATE / (t / args.frames / b):.0f}")


if __name__ == "__main__":
    main()
