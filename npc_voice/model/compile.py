"""Compile the CPU step's numba kernels once, at install (``make install`` runs this).

numba compiles a kernel on its first call and caches the machine code beside the source; the
decoder's and the vocoder's compiled passes take ~15-20 s to compile on a 2-core machine, which
a fresh install would otherwise pay when the daemon first warms up. A tiny random voice has the
same argument types as any voice, so it fills the cache without loading weights.

    python -m npc_voice.model.compile
"""
from __future__ import annotations

import time

import torch

from npc_voice.model import tiny_voice
from npc_voice.model.voice import DEFAULT_CONTROLS


def compile_cpu_kernels() -> float:
    """Step a tiny voice on CPU at 1 and 32 streams (the whole-call and the layered decoder paths,
    the vocoder's passes); returns the seconds it took (mostly compiling, the first time)."""
    start = time.perf_counter()
    voice = tiny_voice(0)
    with torch.inference_mode():
        for batch in (1, 32):
            state = voice.new_state(batch + 1)
            cond = torch.zeros(batch, 8, voice.d_cond)
            controls = torch.tensor(DEFAULT_CONTROLS).repeat(batch, 1)
            voice.step(state, torch.arange(1, batch + 1), cond, controls)
    return time.perf_counter() - start


def main() -> None:
    print(f"npc-voice: CPU kernels compiled and cached in {compile_cpu_kernels():.1f} s")


if __name__ == "__main__":
    main()
