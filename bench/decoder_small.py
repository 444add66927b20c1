"""The fused small-call decoder step (numba) against the eager decoder, call by call.

    .venv/bin/python bench/decoder_small.py [--batches 1 2 4 8 16 32] [--frames 8] [--repeats 60]

Alternates each call between ``decoder_step_cpu`` (kernels/decoder_cpu.py) and the eager
``denormalize(SSMDecoder.step_chunk(...))`` on two copies of the same state, one thread, and
prints the median thread CPU time of each, their paired ratio and the largest difference in the
parameters. ``FUSED_MAX_ROWS`` (the B * K up to which ``SSMVoice.step_params`` takes the fused
pass) comes from where the ratio crosses 1.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from npc_voice_kernels.decoder_cpu import FUSED_MAX_ROWS, decoder_step_cpu

from npc_voice.engine.allocator import keep_freed_memory
from npc_voice.model import load_voice


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=60)
    a = p.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as the engine runs
    voice = load_voice(None)
    arrays = voice._decoder_arrays()
    print(f"voice {voice.version}, K={a.frames}, one thread; the voice takes the fused pass up to "
          f"{FUSED_MAX_ROWS} rows (B * K)")
    for batch in a.batches:
        gen = torch.Generator().manual_seed(batch)
        cond = torch.randn(batch, a.frames, voice.d_cond, generator=gen)
        fused_state = voice.new_state(batch + 1)
        for t in fused_state.values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
        eager_state = {k: t.clone() for k, t in fused_state.items()}
        slots = torch.arange(1, batch + 1)
        fused_s: list[float] = []
        eager_s: list[float] = []
        worst = 0.0
        with torch.inference_mode():
            for i in range(a.repeats + 3):
                t0 = time.thread_time()
                got = decoder_step_cpu(arrays, cond, fused_state["dec_conv"], fused_state["dec_ssm"], slots)
                t1 = time.thread_time()
                want = voice.net.denormalize(voice.net.decoder.step_chunk(
                    cond, eager_state["dec_conv"], eager_state["dec_ssm"], slots))
                t2 = time.thread_time()
                if i >= 3:
                    fused_s.append(t1 - t0)
                    eager_s.append(t2 - t1)
                worst = max(worst, float((got - want).abs().max()))
        ratio = statistics.median(f / e for f, e in zip(fused_s, eager_s, strict=True))
        print(f"batch {batch:3d} ({batch * a.frames:4d} rows): fused {statistics.median(fused_s) * 1e3:.3f} ms, "
              f"eager {statistics.median(eager_s) * 1e3:.3f} ms (paired ratio {ratio:.3f}); "
              f"largest parameter difference {worst:.1e}")


if __name__ == "__main__":
    main()
