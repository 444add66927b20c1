"""npc-voice step kernels (import name ``npc_voice_kernels``).

Each op has a Triton kernel for CUDA and a pure-torch ``*_ref`` used on CPU.
This package imports only torch (and triton lazily, on CUDA or under
TRITON_INTERPRET=1); it never imports npc_voice.
"""
from npc_voice_kernels.ssm_step import ssm_step, ssm_step_ref

__all__ = ["ssm_step", "ssm_step_ref"]
