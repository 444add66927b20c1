"""The voice step with the vocoder's pulse slots cut to what a call uses against all 13 slots,
alternating call by call on real lines (what ``Vocoder._used_pulses`` saves on CPU).

    .venv/bin/python bench/pulse_slots.py [--batches 16 32 64] [--passes 4]

Each call steps B streams K = 8 frames of prepared bark lines (decoder + vocoder, one thread, the
engine's allocator setting); the two arms keep their own state pools. Prints the median wall
time of a call for each arm, the median paired ratio, and whether the samples are the same.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from npc_voice.audio.vocoder import Vocoder
from npc_voice.engine.allocator import keep_freed_memory
from npc_voice.frontend import text_to_phonemes
from npc_voice.loadtest.lines import BARKS
from npc_voice.model import load_voice
from npc_voice.model.voice import DEFAULT_CONTROLS

K = 8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--passes", type=int, default=4, help="times through the lines (the state carries on)")
    args = p.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    voice = load_voice()
    cut = Vocoder.__dict__["_used_pulses"]
    every = staticmethod(lambda pos, amp: (pos, amp))
    try:
        for b in args.batches:
            lines = [voice.prepare(text_to_phonemes(BARKS[i % len(BARKS)], {})) for i in range(b)]
            frames = min(line.n_frames for line in lines)
            pools = {"cut": voice.new_state(b + 1), "every": voice.new_state(b + 1)}
            slots = torch.arange(1, b + 1)
            controls = torch.tensor(DEFAULT_CONTROLS).repeat(b, 1)
            times: dict[str, list[float]] = {"cut": [], "every": []}
            same = True
            for j in [j for _ in range(args.passes) for j in range(0, frames - K + 1, K)]:
                cond = torch.stack([line.cond[j : j + K] for line in lines])
                out = {}
                for arm in ("cut", "every") if (j // K) % 2 else ("every", "cut"):
                    Vocoder._used_pulses = cut if arm == "cut" else every  # type: ignore[method-assign]
                    t0 = time.perf_counter()
                    out[arm] = voice.step(pools[arm], slots, cond, controls)
                    times[arm].append(time.perf_counter() - t0)
                same = same and torch.equal(out["cut"], out["every"])
            ratios = [c / e for c, e in zip(times["cut"], times["every"], strict=True)]
            print(f"batch {b:3d}: {len(ratios)} calls, pulse slots cut {statistics.median(times['cut']) * 1e3:.2f} ms, "
                  f"all 13 {statistics.median(times['every']) * 1e3:.2f} ms, paired ratio "
                  f"{statistics.median(ratios):.3f}, same samples: {same}")
    finally:
        Vocoder._used_pulses = cut  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
