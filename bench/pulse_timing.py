"""The vocoder's pulse timing compiled (numba) against the torch ops, in the whole model step.

    .venv/bin/python bench/pulse_timing.py [--batches 1 4 32] [--frames 8] [--repeats 60]

Alternates each step call between ``_pulses_kernel`` (numba, the CPU default) and the torch
``_pulses`` + ``_used_pulses`` on the same state, and prints the median thread CPU time of each
and their paired ratio. The timing is ~60 small torch ops whatever the batch: it shows in the
small calls (a new line's first piece), less in a 32-row beat piece.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import npc_voice.audio.vocoder as vocoder_module
from npc_voice.model import load_voice
from npc_voice.model.voice import DEFAULT_CONTROLS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 32])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=60)
    a = p.parse_args()
    torch.set_num_threads(1)
    voice = load_voice(None)
    compiled = vocoder_module._pulses_cpu
    if compiled is None:
        raise SystemExit("numba is not installed: nothing to compare")
    for batch in a.batches:
        cond = torch.randn(batch, a.frames, voice.d_cond, generator=torch.Generator().manual_seed(0))
        controls = torch.tensor(DEFAULT_CONTROLS).repeat(batch, 1)
        state = voice.new_state(batch + 1)
        slots = torch.arange(1, batch + 1)
        times: dict[str, list[float]] = {"compiled": [], "torch": []}
        try:
            for i in range(a.repeats + 5):
                for name, fn in (("compiled", compiled), ("torch", None)):
                    vocoder_module._pulses_cpu = fn
                    t0 = time.thread_time()
                    voice.step(state, slots, cond, controls)
                    if i >= 5:
                        times[name].append(time.thread_time() - t0)
        finally:
            vocoder_module._pulses_cpu = compiled
        ratio = statistics.median(c / t for c, t in zip(times["compiled"], times["torch"], strict=True))
        print(f"batch {batch:3d}, K={a.frames}: step {statistics.median(times['compiled']) * 1e3:.2f} ms compiled, "
              f"{statistics.median(times['torch']) * 1e3:.2f} ms torch (paired ratio {ratio:.3f})")


if __name__ == "__main__":
    main()
