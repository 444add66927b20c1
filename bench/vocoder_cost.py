"""Vocoder cost per frame per stream at several batch sizes (CPU threads as given).

    .venv/bin/python bench/vocoder_cost.py [--threads 2] [--batches 1 64 512] [--frames 1]
                                           [--against-stream-pieces]

``--against-stream-pieces`` alternates each call with the whole vocoder run per CPU_RESPONSE_ROWS
// K streams (how the CPU step ran it before the per-stream work ran once per call) and prints
both medians of thread CPU time and their paired ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from npc_voice.audio import features as F
from npc_voice.audio.vocoder import CPU_RESPONSE_ROWS, NEUTRAL_CONTROLS, Vocoder


def inputs(batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plausible vocoder parameters [batch, frames, FEATURE_DIM] and neutral controls."""
    gen = torch.Generator().manual_seed(0)
    params = torch.randn(batch, frames, F.FEATURE_DIM, generator=gen)
    params[..., F.LF0] = 4.8 + 0.2 * params[..., F.LF0]
    params[..., F.VUV] = (params[..., F.VUV] > 0).float()
    params[..., F.ENV] = -5.0 + params[..., F.ENV]
    params[..., F.AP] = -20.0 + 5.0 * params[..., F.AP]
    return params, torch.tensor(NEUTRAL_CONTROLS).repeat(batch, 1)


def against_stream_pieces(voc: Vocoder, batch: int, frames: int, repeats: int) -> tuple[float, float]:
    """Median thread CPU seconds of one ``step`` over ``batch`` streams, and of the same work as one
    ``step`` per CPU_RESPONSE_ROWS // frames streams, the two alternating."""
    params, controls = inputs(batch, frames)
    state = voc.new_state(batch + 1)
    slots = torch.arange(1, batch + 1)
    per = max(1, CPU_RESPONSE_ROWS // frames)

    def whole() -> None:
        voc.step(state, slots, params, controls)

    def pieces() -> None:
        for i in range(0, batch, per):
            voc.step(state, slots[i : i + per], params[i : i + per], controls[i : i + per])

    times: dict[str, list[float]] = {"whole": [], "pieces": []}
    for i in range(repeats + 2):
        for name, fn in (("whole", whole), ("pieces", pieces)):
            t0 = time.thread_time()
            fn()
            if i >= 2:
                times[name].append(time.thread_time() - t0)
    return statistics.median(times["whole"]), statistics.median(times["pieces"])


def measure(voc: Vocoder, batch: int, frames: int, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) for one ``step`` of ``frames`` frames over
    ``batch`` streams. CPU time is the steadier figure on a shared machine (preemption is not counted)."""
    params, controls = inputs(batch, frames)
    state = voc.new_state(batch + 1)
    slots = torch.arange(1, batch + 1)
    wall, cpu = [], []
    for i in range(repeats + 2):
        t0, c0 = time.perf_counter(), time.process_time()
        voc.step(state, slots, params, controls)
        if i >= 2:  # warm-up
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return sorted(wall)[len(wall) // 2], sorted(cpu)[len(cpu) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512])
    p.add_argument("--frames", type=int, default=1, help="frames per step call (K)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--against-stream-pieces", action="store_true",
                   help="alternate with the whole vocoder per CPU_RESPONSE_ROWS // K streams (the step before)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    voc = Vocoder()
    print(f"threads={args.threads} frames/call={args.frames} (one frame = {F.HOP / F.SAMPLE_RATE * 1e3:.1f} ms audio)")
    for b in args.batches:
        if args.against_stream_pieces:
            whole, pieces = against_stream_pieces(voc, b, args.frames, args.repeats)
            print(f"batch {b:4d}: one call {whole * 1e3:.2f} ms, per {max(1, CPU_RESPONSE_ROWS // args.frames)} "
                  f"streams {pieces * 1e3:.2f} ms (thread CPU, medians; {1 - whole / pieces:.0%} less)")
            continue
        wall, cpu = measure(voc, b, args.frames, args.repeats)
        n = b * args.frames
        print(f"batch {b:4d}: wall {wall * 1e3:8.2f} ms/call = {wall / n * 1e3:.4f} ms/frame/stream; "
              f"cpu {cpu * 1e3:8.2f} ms/call = {cpu / n * 1e3:.4f} ms/frame/stream; "
              f"one core keeps {F.HOP / F.SAMPLE_RATE / (cpu / n):.0f} streams real-time")


if __name__ == "__main__":
    main()
