"""npc-voice step kernels (import name ``npc_voice_kernels``).

Each op has a Triton kernel for CUDA, a plain pure-torch ``*_ref`` beside it that defines
the math, and a CPU fast path tested against that reference. This package imports only
torch, numpy and (optionally) numba, and triton on first CUDA use (or under
TRITON_INTERPRET=1); it never imports npc_voice.

- ``ssm_step`` / ``ssm_step_ref``: one decoder layer's step over a batch of
  state-pool rows (ssm_step.py); the Triton kernel is ``ssm_step_triton.py``, the
  fused CPU loop ``ssm_step_cpu.py`` (numba, optional: without it, ``ssm_step_torch``).
- ``ssm_step_chunk`` / ``ssm_step_chunk_ref``: K consecutive frames of ``ssm_step`` (a
  tick): on CPU one fused numba pass that reads and writes each state row once.
  ``ssm_step_chunk_packed`` takes the layer's packed projection batch-major (what the
  model has): on CPU the conv and the recurrence read it in place, no split or transpose.
- ``decoder_cpu.decoder_step_cpu``: the whole decoder step on CPU (every layer and the head)
  in compiled passes (numba): one call for a small call, around BLAS projections for a large
  one, instead of ~340 torch ops.
- ``GraphedStep``, ``bucket_for``, ``DEFAULT_BUCKETS``: batch-size buckets and
  CUDA-graph replay of a whole batched step (cuda_graphs.py).
"""
from npc_voice_kernels.cuda_graphs import DEFAULT_BUCKETS, GraphedStep, bucket_for
from npc_voice_kernels.ssm_step import (
    ssm_step,
    ssm_step_chunk,
    ssm_step_chunk_packed,
    ssm_step_chunk_ref,
    ssm_step_ref,
    ssm_step_torch,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "GraphedStep",
    "bucket_for",
    "ssm_step",
    "ssm_step_chunk",
    "ssm_step_chunk_packed",
    "ssm_step_chunk_ref",
    "ssm_step_ref",
    "ssm_step_torch",
]
