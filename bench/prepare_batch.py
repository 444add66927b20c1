"""Line preparation (encoder + durations) per line, alone and in batches.

    .venv/bin/python bench/prepare_batch.py [--threads 1] [--batches 1 2 4 8 16]

The daemon's preparer thread (``npc_voice/engine/prepare.py``) prepares the lines that wait
together in one ``prepare_batch``; this measures what that saves per line over the load test's
barks (CPU time of this process, so that a busy machine inflates it less than wall time).
"""
from __future__ import annotations

import argparse
import time

import torch

from npc_voice.frontend import text_to_phonemes
from npc_voice.loadtest.lines import BARKS
from npc_voice.model import load_voice


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--voice", help="voice directory (default: the shipped voice)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the daemon uses half the cores)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    voice = load_voice(a.voice)
    lines = [text_to_phonemes(text, {}) for text in BARKS]
    lines.sort(key=lambda ph: len(ph.symbols))  # as the preparer does: similar lengths together
    print(f"{len(lines)} barks, {sum(len(ph.symbols) for ph in lines) / len(lines):.0f} symbols on average; "
          f"{a.threads} torch thread(s), CPU time")
    with torch.inference_mode():
        for _ in range(2):  # warm-up
            voice.prepare_batch(lines, speeds=[1.0] * len(lines))
        for size in a.batches:
            t0 = time.process_time()
            for _ in range(a.repeats):
                for i in range(0, len(lines), size):
                    chunk = lines[i : i + size]
                    voice.prepare_batch(chunk, speeds=[1.0] * len(chunk))
            per_line = (time.process_time() - t0) / (a.repeats * len(lines))
            print(f"batches of {size:2d}: {per_line * 1000:.2f} ms per line")


if __name__ == "__main__":
    main()
