"""Voice step cost per frame per stream: SSM decoder alone and decoder + vocoder.

    .venv/bin/python bench/model_step_cost.py [--voice DIR] [--threads 2] [--batches 1 64 512] [--frames 4]

Each call steps every stream ``--frames`` frames (the engine's K) against a state pool, as the
engine does; the figure is the median call time / (frames * batch). Real time needs one frame
per 11.61 ms per stream, so ``streams = 11.61 ms / cost``.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from npc_voice.contracts import FRAMES_PER_S
from npc_voice.model import load_voice
from npc_voice.model.voice import DEFAULT_CONTROLS, SSMVoice

FRAME_MS = 1000 / FRAMES_PER_S  # 11.6 ms of audio per frame


def measure(voice: SSMVoice, batch: int, frames: int, repeats: int, vocoder: bool, cpu_time: bool) -> float:
    """Median seconds of one step call over ``batch`` streams (process CPU time if ``cpu_time``)."""
    clock = time.process_time if cpu_time else time.perf_counter
    gen = torch.Generator().manual_seed(0)
    cond = torch.randn(batch, frames, voice.d_cond, generator=gen)
    controls = torch.tensor(DEFAULT_CONTROLS).repeat(batch, 1)
    state = voice.new_state(batch + 1)
    slots = torch.arange(1, batch + 1)
    times = []
    for i in range(repeats + 2):
        t0 = clock()
        if vocoder:
            voice.step(state, slots, cond, controls)
        else:
            voice.step_params(state, slots, cond)
        if i >= 2:  # warm-up
            times.append(clock() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--voice", help="voice directory (default: the shipped voice)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512])
    p.add_argument("--frames", type=int, default=4, help="frames per step call (K)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--cpu-time", action="store_true",
                   help="process CPU time instead of wall time (honest on a shared machine; use --threads 1)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    voice = load_voice(a.voice)
    print(f"voice {voice.name} {voice.version}: {voice.param_count():,} parameters, "
          f"{voice.state_bytes():,} state bytes per stream; {a.threads} threads, K={a.frames}, "
          f"{'CPU' if a.cpu_time else 'wall'} time")
    rows = []
    for batch in a.batches:
        reps = max(3, a.repeats if batch <= 64 else a.repeats // 3)
        dec = measure(voice, batch, a.frames, reps, vocoder=False, cpu_time=a.cpu_time) / (a.frames * batch) * 1e3
        full = measure(voice, batch, a.frames, reps, vocoder=True, cpu_time=a.cpu_time) / (a.frames * batch) * 1e3
        rows.append({"batch": batch, "decoder_ms_per_frame_stream": dec, "total_ms_per_frame_stream": full,
                     "total_ms_per_frame_batch": full * batch, "realtime_streams": FRAME_MS / full})
        print(f"batch {batch:4d}: decoder {dec:.4f} ms, decoder+vocoder {full:.4f} ms per frame per stream "
              f"({full * batch:.2f} ms per frame for the batch; ~{FRAME_MS / full:.0f} real-time streams)")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"voice": voice.version, "threads": a.threads, "frames": a.frames, "cpu_time": a.cpu_time,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
