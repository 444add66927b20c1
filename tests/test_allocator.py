"""The engine keeps glibc from returning its step buffers to the kernel (npc_voice.engine.allocator)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

STEPS = r"""
import resource, sys, torch
torch.set_num_threads(1)
from npc_voice.engine.allocator import keep_freed_memory
print("set", keep_freed_memory())
from npc_voice.audio import features as F
from npc_voice.audio import vocoder
from npc_voice.audio.vocoder import Vocoder
from npc_voice.contracts import NEUTRAL_CONTROLS
b, k = 64, 8
vocoder.CPU_RESPONSE_ROWS = b * k  # one piece: ~20 MiB of step buffers (a large max_batch), not 128-row pieces
voc = Vocoder(); state = voc.new_state(b); slots = torch.arange(b)
params = torch.zeros(b, k, F.FEATURE_DIM); params[..., F.LF0] = 5.0; params[..., F.VUV] = 1.0; params[..., F.ENV] = -6.0
controls = torch.tensor(NEUTRAL_CONTROLS).expand(b, -1).clone()
for _ in range(4):
    voc.step(state, slots, params, controls)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    voc.step(state, slots, params, controls)
print("faults", (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8)
"""


def run_steps(env: dict[str, str]) -> tuple[str, float]:
    cmd = [sys.executable, "-c", STEPS]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    return lines["set"], float(lines["faults"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_steps_do_not_fault_their_buffers_back_in_and_an_operator_setting_wins() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    kept, faults_kept = run_steps(clean)
    left, faults_default = run_steps({**clean, "MALLOC_ARENA_MAX": "8"})  # the operator's: we leave malloc alone
    assert (kept, left) == ("True", "False")
    # glibc's default trims the freed heap top after each step and faults ~20 MiB back in the next
    assert faults_kept * 10 < faults_default, (faults_kept, faults_default)
