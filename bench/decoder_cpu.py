"""The decoder's compiled CPU step against the eager decoder, call by call.

    .venv/bin/python bench/decoder_cpu.py [--batches 1 2 4 8 16 24 32 64] [--frames 8] [--repeats 60]

Alternates each call between the eager ``denormalize(SSMDecoder.step_chunk(...))``, the
compiled step as shipped (``decoder_step_cpu``: one whole call up to ``FUSED_MAX_ROWS`` rows,
BLAS projections with compiled passes between them above), and the compiled step forced the
other way (``whole`` / ``layered``), on copies of the same state, one thread; prints the median
thread CPU time of each, the paired ratio compiled / eager, and the largest difference in the
parameters. ``FUSED_MAX_ROWS`` comes from where whole / layered crosses 1.
"""
from __future__ import annotations

import argparse
import statistics
import time

import npc_voice_kernels.decoder_cpu as decoder_cpu
import torch

from npc_voice.engine.allocator import keep_freed_memory
from npc_voice.model import load_voice


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 24, 32, 64])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=60)
    a = p.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as the engine runs
    voice = load_voice(None)
    arrays = voice._decoder_arrays()
    shipped = decoder_cpu.FUSED_MAX_ROWS
    print(f"voice {voice.version}, K={a.frames}, one thread; one whole compiled call up to {shipped} rows (B * K)")
    for batch in a.batches:
        gen = torch.Generator().manual_seed(batch)
        cond = torch.randn(batch, a.frames, voice.d_cond, generator=gen)
        state = voice.new_state(batch + 1)
        for t in state.values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
        states = {name: {k: t.clone() for k, t in state.items()} for name in ("eager", "compiled", "whole", "layered")}
        slots = torch.arange(1, batch + 1)
        times: dict[str, list[float]] = {name: [] for name in states}
        worst = 0.0
        try:
            with torch.inference_mode():
                for i in range(a.repeats + 3):
                    out = {}
                    for name, st in states.items():
                        decoder_cpu.FUSED_MAX_ROWS = {"whole": 1 << 30, "layered": 0}.get(name, shipped)
                        t0 = time.thread_time()
                        if name == "eager":
                            out[name] = voice.net.denormalize(voice.net.decoder.step_chunk(
                                cond, st["dec_conv"], st["dec_ssm"], slots))
                        else:
                            out[name] = decoder_cpu.decoder_step_cpu(arrays, cond, st["dec_conv"], st["dec_ssm"], slots)
                        if i >= 3:
                            times[name].append(time.thread_time() - t0)
                    worst = max(worst, float((out["compiled"] - out["eager"]).abs().max()))
        finally:
            decoder_cpu.FUSED_MAX_ROWS = shipped
        med = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
        ratio = statistics.median(c / e for c, e in zip(times["compiled"], times["eager"], strict=True))
        split = statistics.median(w / x for w, x in zip(times["whole"], times["layered"], strict=True))
        print(f"batch {batch:3d} ({batch * a.frames:4d} rows): eager {med['eager']:.3f} ms, compiled "
              f"{med['compiled']:.3f} ms (paired ratio {ratio:.3f}); whole / layered {split:.3f}; "
              f"largest parameter difference {worst:.1e}")


if __name__ == "__main__":
    main()
