"""The whole voice step with its compiled CPU paths on and off, call by call.

    .venv/bin/python bench/step_compiled.py [--batches 1 2 4 8 16 32 64] [--frames 8] [--repeats 60]

"on" is the voice as shipped: the decoder's compiled step (kernels/decoder_cpu.py), the
vocoder's per-stream work around its frame responses compiled (``_inputs_kernel``,
``_output_kernel`` in npc_voice/audio/vocoder.py) and its filter after one matrix product
(``_filter_kernel``). "off" switches the three off in the same process (the eager decoder, with
its numba conv and recurrence; the vocoder's torch code and per-formant filter matrices; the
pulse timing stays compiled in both), which is the step before they existed. Alternating calls
on two copies of one state, one thread, thread CPU time; prints the medians and the paired ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import npc_voice_kernels.decoder_cpu as decoder_cpu
import torch

import npc_voice.audio.vocoder as vocoder_module
from npc_voice.engine.allocator import keep_freed_memory
from npc_voice.model import load_voice
from npc_voice.model.voice import DEFAULT_CONTROLS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=60)
    a = p.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as the engine runs
    voice = load_voice(None)
    inputs, decoder, filt = vocoder_module._inputs_cpu, decoder_cpu._decoder_cpu, vocoder_module._filter_cpu
    if inputs is None or decoder is None or filt is None:
        raise SystemExit("numba is not installed: nothing to compare")
    print(f"voice {voice.version}, K={a.frames}, one thread, thread CPU time per call")
    try:
        for batch in a.batches:
            gen = torch.Generator().manual_seed(batch)
            cond = torch.randn(batch, a.frames, voice.d_cond, generator=gen)
            controls = torch.tensor(DEFAULT_CONTROLS).repeat(batch, 1)
            states = {"on": voice.new_state(batch + 1), "off": voice.new_state(batch + 1)}
            slots = torch.arange(1, batch + 1)
            times: dict[str, list[float]] = {"on": [], "off": []}
            for i in range(a.repeats + 3):
                for name in ("on", "off"):
                    vocoder_module._inputs_cpu = inputs if name == "on" else None
                    decoder_cpu._decoder_cpu = decoder if name == "on" else None
                    vocoder_module._filter_cpu = filt if name == "on" else None
                    t0 = time.thread_time()
                    voice.step(states[name], slots, cond, controls)
                    if i >= 3:
                        times[name].append(time.thread_time() - t0)
            ratio = statistics.median(x / y for x, y in zip(times["on"], times["off"], strict=True))
            print(f"batch {batch:3d}: on {statistics.median(times['on']) * 1e3:6.2f} ms, "
                  f"off {statistics.median(times['off']) * 1e3:6.2f} ms (paired ratio {ratio:.3f})")
    finally:
        vocoder_module._inputs_cpu, decoder_cpu._decoder_cpu = inputs, decoder
        vocoder_module._filter_cpu = filt


if __name__ == "__main__":
    main()
