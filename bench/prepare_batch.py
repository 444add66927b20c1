"""Line preparation (encoder + durations) per line, alone and in batches.

    .venv/bin/python bench/prepare_batch.py [--threads 1] [--batches 1 2 4 8 16] [--against-native-conv]

The daemon's preparer thread (``npc_voice/engine/prepare.py``) prepares the lines that wait
together in one ``prepare_batch``; this measures what that saves per line over the load test's
barks (CPU time of this process, so that a busy machine inflates it less than wall time).
``--against-native-conv`` alternates each repeat with the encoder's convolutions run by torch's
own conv1d (what ``conv_over_time`` replaced) and prints both medians and their paired ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from npc_voice.frontend import text_to_phonemes
from npc_voice.loadtest.lines import BARKS
from npc_voice.model import encoder, load_voice


def native_conv(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """The convolution as it ran before ``encoder.conv_over_time``: torch's conv1d, channels first."""
    return F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, padding=conv.padding,
                    dilation=conv.dilation).transpose(1, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--voice", help="voice directory (default: the shipped voice)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the daemon uses half the cores)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--against-native-conv", action="store_true",
                   help="alternate with torch's conv1d for the encoder's convolutions (the code before)")
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
        arms = {"windows @ weight": encoder.conv_over_time}
        if a.against_native_conv:
            arms["torch conv1d"] = native_conv
        for size in a.batches:
            per_line: dict[str, list[float]] = {name: [] for name in arms}
            for _ in range(a.repeats):
                for name, conv in arms.items():  # alternating: the VM's speed swings hit both
                    encoder.conv_over_time = conv  # type: ignore[assignment]
                    t0 = time.process_time()
                    for i in range(0, len(lines), size):
                        chunk = lines[i : i + size]
                        voice.prepare_batch(chunk, speeds=[1.0] * len(chunk))
                    per_line[name].append((time.process_time() - t0) / len(lines))
            encoder.conv_over_time = arms["windows @ weight"]  # type: ignore[assignment]
            text = ", ".join(f"{name} {statistics.median(v) * 1000:.2f}" for name, v in per_line.items())
            if a.against_native_conv:
                ratio = statistics.median(x / y for x, y in zip(*per_line.values(), strict=True))
                text += f" (paired ratio {ratio:.2f})"
            print(f"batches of {size:2d}: {text} ms per line")


if __name__ == "__main__":
    main()
