"""One CPU model call stepped by one thread against the same call's rows split over N threads.

    .venv/bin/python bench/step_split.py [--threads 2] [--batches 16 32 64] [--frames 8] [--repeats 20]

Alternates the two call by call in one process (this VM's speed drifts within minutes), the
shipped voice, torch at one intra-op thread as the engine runs it; prints median wall time per
call and the process CPU time per call (both threads) for each. The split is the engine's own
(``npc_voice.engine.split.RowSplitter``: chunks of at least 16 rows, claimed by whichever thread
is free).
"""
from __future__ import annotations

import argparse
import time

import torch

from npc_voice.engine.split import RowSplitter, chunk_bounds
from npc_voice.model import load_voice
from npc_voice.model.voice import DEFAULT_CONTROLS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="threads stepping the split call")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64], help="streams per call")
    p.add_argument("--frames", type=int, default=8, help="frames per call (K)")
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(1)
    voice = load_voice(None)
    splitter = RowSplitter(a.threads)
    state = voice.new_state(max(a.batches) + 1)
    print(f"voice {voice.name}: K={a.frames}, split over {a.threads} threads; median per call, alternating")
    for batch in a.batches:
        gen = torch.Generator().manual_seed(batch)
        cond = torch.randn(batch, a.frames, voice.d_cond, generator=gen)
        controls = torch.tensor(DEFAULT_CONTROLS).repeat(batch, 1)
        slots = torch.arange(1, batch + 1)

        def whole(s: torch.Tensor, c: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            return voice.step(state, s, c, k)

        runs: dict[str, list[tuple[float, float]]] = {"one thread": [], "split": []}
        with torch.inference_mode():
            for i in range(2 * (a.repeats + 2)):
                name = "split" if i % 2 else "one thread"
                t0, c0 = time.perf_counter(), time.process_time()
                if name == "split":
                    splitter.run(whole, slots, cond, controls)
                else:
                    whole(slots, cond, controls)
                if i >= 4:  # warm-up
                    runs[name].append((time.perf_counter() - t0, time.process_time() - c0))
        med = {name: (sorted(w for w, _ in r)[len(r) // 2] * 1e3, sorted(c for _, c in r)[len(r) // 2] * 1e3)
               for name, r in runs.items()}
        (w1, c1), (w2, c2) = med["one thread"], med["split"]
        print(f"batch {batch:3d} ({len(chunk_bounds(batch, a.threads))} chunks): one thread {w1:6.2f} ms wall "
              f"{c1:6.2f} ms CPU | split {w2:6.2f} ms wall {c2:6.2f} ms CPU | wall ratio {w2 / w1:.2f}, "
              f"CPU ratio {c2 / c1:.2f}")
    splitter.close()


if __name__ == "__main__":
    main()
