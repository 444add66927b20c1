"""Decoder step for one Mamba-2 style layer, gathered from a state pool: the op and its references.

Math (per row b, layer l, slot s = slots[b]; conv_dim = d_inner + 2 * d_state):
    win   = cat(conv_state[s, l], xbc[b])            # [d_conv, conv_dim]
    xbc'  = silu(sum_k win[k] * conv_w[:, k] + conv_b)
    conv_state[s, l] = win[1:]
    x, Bv, Cv = split(xbc', [d_inner, d_state, d_state]); x -> [nheads, headdim]
    dt    = softplus(dt_raw[b] + dt_bias)             # [nheads]
    dA    = exp(-exp(A_log) * dt)                     # scalar decay per head
    h     = ssm_state[s, l] * dA + dt * x[..., None] * Bv  # [nheads, headdim, d_state]
    ssm_state[s, l] = h
    y     = (h @ Cv) + D * x                          # [nheads, headdim]
    out   = y * silu(z[b])                             # [d_inner]

Shapes (every implementation):
    xbc        [B, conv_dim]  pre-conv x|B|C for this layer (fp32 or bf16)
    dt         [B, nheads]    raw dt (before bias and softplus)
    z          [B, d_inner]   gate
    conv_state [slots, layers, d_conv - 1, conv_dim]  oldest first; updated in place
    ssm_state  [slots, layers, nheads, headdim, d_state] fp32; updated in place
    slots      [B] int64; padding rows point at scratch slot 0
    conv_w     [conv_dim, d_conv]; conv_b [conv_dim]
    dt_bias, A_log, D  [nheads]
    returns    [B, d_inner] in xbc's dtype

Implementations, chosen by ``ssm_step`` (the op the model calls):

- ``ssm_step_ref`` (here): the math above written literally in torch. The definition: every
  other implementation is tested against it (tests/test_kernels_ssm_step.py).
- ``ssm_step_triton`` (ssm_step_triton.py): the fused Triton kernel, for CUDA tensors.
- ``ssm_step_cpu`` (ssm_step_cpu.py): the fused numba loop, on CPU for float32 without autograd.
- ``ssm_step_torch`` (here): the reference rewritten for CPU speed (one contiguous gather and
  scatter per row, in-place update); the CPU path when the numba loop cannot run (bf16,
  autograd, numba missing, or ``NPC_VOICE_CPU_STEP=torch``).

``ssm_step_chunk`` is K consecutive frames of ``ssm_step`` (a tick); ``ssm_step_chunk_ref`` is
K calls of ``ssm_step_ref``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from npc_voice_kernels.ssm_step_cpu import cpu_step_available, ssm_chunk_packed_cpu, ssm_step_cpu


def ssm_step_ref(
    xbc: torch.Tensor,
    dt: torch.Tensor,
    z: torch.Tensor,
    conv_state: torch.Tensor,
    ssm_state: torch.Tensor,
    slots: torch.Tensor,
    layer: int,
    conv_w: torch.Tensor,
    conv_b: torch.Tensor,
    dt_bias: torch.Tensor,
    A_log: torch.Tensor,
    D: torch.Tensor,
) -> torch.Tensor:
    """The module docstring's math, literally (shapes there). Slow on purpose: obviously right."""
    B = xbc.shape[0]
    nheads, headdim, d_state = ssm_state.shape[2:]
    d_inner = nheads * headdim
    win = torch.cat([conv_state[slots, layer].float(), xbc.float()[:, None, :]], dim=1)  # [B, d_conv, conv_dim]
    conv_state[slots, layer] = win[:, 1:].to(conv_state.dtype)
    xbc_c = F.silu((win * conv_w.float().t()[None]).sum(1) + conv_b.float())  # [B, conv_dim]
    x, Bv, Cv = torch.split(xbc_c, [d_inner, d_state, d_state], dim=-1)
    x = x.reshape(B, nheads, headdim)
    dt_s = F.softplus(dt.float() + dt_bias.float())  # [B, nheads]
    dA = torch.exp(-torch.exp(A_log.float()) * dt_s)  # [B, nheads]
    h = ssm_state[slots, layer] * dA[:, :, None, None] + (dt_s[:, :, None] * x)[..., None] * Bv[:, None, None, :]
    ssm_state[slots, layer] = h  # [B, nheads, headdim, d_state]
    y = torch.einsum("bhpn,bn->bhp", h, Cv) + D.float()[None, :, None] * x  # [B, nheads, headdim]
    return (y.reshape(B, d_inner) * F.silu(z.float())).to(xbc.dtype)


def ssm_step_torch(
    xbc: torch.Tensor,
    dt: torch.Tensor,
    z: torch.Tensor,
    conv_state: torch.Tensor,
    ssm_state: torch.Tensor,
    slots: torch.Tensor,
    layer: int,
    conv_w: torch.Tensor,
    conv_b: torch.Tensor,
    dt_bias: torch.Tensor,
    A_log: torch.Tensor,
    D: torch.Tensor,
) -> torch.Tensor:
    """``ssm_step_ref`` in eager torch, written for CPU speed; same shapes, equal within rounding."""
    B = xbc.shape[0]
    nheads, headdim, d_state = ssm_state.shape[2:]
    d_inner = nheads * headdim
    # Gather/scatter one contiguous block per row with index_select/index_copy_ on the
    # layer's view: several times cheaper on CPU than advanced indexing, same values.
    # (Duplicate slots, i.e. padding rows at scratch slot 0, may land in any order.)
    idx = slots if slots.dtype == torch.int64 else slots.long()
    conv_l, ssm_l = conv_state[:, layer], ssm_state[:, layer]
    win = torch.cat([conv_l.index_select(0, idx).float(), xbc.float()[:, None, :]], dim=1)  # [B, d_conv, conv_dim]
    conv_l.index_copy_(0, idx, win[:, 1:].to(conv_state.dtype))
    xbc_c = F.silu((win * conv_w.float().t()[None]).sum(1) + conv_b.float())  # [B, conv_dim]
    x, Bv, Cv = torch.split(xbc_c, [d_inner, d_state, d_state], dim=-1)
    x = x.view(B, nheads, headdim)
    dt_s = F.softplus(dt.float() + dt_bias.float())  # [B, nheads]
    dA = torch.exp(-torch.exp(A_log.float()) * dt_s)  # [B, nheads]
    h = ssm_l.index_select(0, idx)  # [B, nheads, headdim, d_state], a fresh copy: update it in place
    h.mul_(dA[:, :, None, None]).addcmul_((dt_s[:, :, None] * x)[..., None], Bv[:, None, None, :])
    ssm_l.index_copy_(0, idx, h)
    y = (h * Cv[:, None, None, :]).sum(-1) + D.float()[None, :, None] * x  # h @ Cv; a CPU bmm is slower here
    out = y.reshape(B, d_inner) * F.silu(z.float())
    return out.to(xbc.dtype)


def ssm_step(
    xbc: torch.Tensor,
    dt: torch.Tensor,
    z: torch.Tensor,
    conv_state: torch.Tensor,
    ssm_state: torch.Tensor,
    slots: torch.Tensor,
    layer: int,
    conv_w: torch.Tensor,
    conv_b: torch.Tensor,
    dt_bias: torch.Tensor,
    A_log: torch.Tensor,
    D: torch.Tensor,
) -> torch.Tensor:
    """One decoder-layer step (shapes: module docstring). CUDA tensors: the Triton kernel. CPU:
    the numba loop for float32 without autograd when numba is installed, else ``ssm_step_torch``."""
    args = (xbc, dt, z, conv_state, ssm_state, slots, layer, conv_w, conv_b, dt_bias, A_log, D)
    if xbc.is_cuda:
        # Imported on first CUDA use, not at the top: triton is an optional, CUDA-only dependency.
        from npc_voice_kernels.ssm_step_triton import ssm_step_triton

        return ssm_step_triton(*args)
    floats = (xbc, dt, z, conv_state, ssm_state, conv_w, conv_b, dt_bias, A_log, D)
    if not _wants_grad(floats) and cpu_step_available(slots, *floats):
        return ssm_step_cpu(*args)
    return ssm_step_torch(*args)


def ssm_step_chunk(
    xbc: torch.Tensor,
    dt: torch.Tensor,
    z: torch.Tensor,
    conv_state: torch.Tensor,
    ssm_state: torch.Tensor,
    slots: torch.Tensor,
    layer: int,
    conv_w: torch.Tensor,
    conv_b: torch.Tensor,
    dt_bias: torch.Tensor,
    A_log: torch.Tensor,
    D: torch.Tensor,
) -> torch.Tensor:
    """K consecutive frames of ``ssm_step``: xbc [K, B, conv_dim], dt [K, B, nheads], z [K, B, d_inner]
    -> [K, B, d_inner]; the states end as after K single steps. On CPU the numba chunk path
    (each state row read and written once per call; ``ssm_step_chunk_packed``, which the model
    calls, on these pieces packed) where ``ssm_step`` would take the numba loop; elsewhere K
    calls of ``ssm_step``."""
    rest = (conv_state, ssm_state, slots, layer, conv_w, conv_b, dt_bias, A_log, D)
    floats = (xbc, dt, z, conv_state, ssm_state, conv_w, conv_b, dt_bias, A_log, D)
    if _numba_chunk(xbc.shape[0], xbc.is_cuda, slots, floats):  # (one frame: the single-step loop is faster)
        return ssm_chunk_packed_cpu(torch.cat([z, xbc, dt], dim=-1).transpose(0, 1), *rest).transpose(0, 1)
    return torch.stack([ssm_step(xbc[k], dt[k], z[k], *rest) for k in range(xbc.shape[0])])


def ssm_step_chunk_packed(
    proj: torch.Tensor,
    conv_state: torch.Tensor,
    ssm_state: torch.Tensor,
    slots: torch.Tensor,
    layer: int,
    conv_w: torch.Tensor,
    conv_b: torch.Tensor,
    dt_bias: torch.Tensor,
    A_log: torch.Tensor,
    D: torch.Tensor,
) -> torch.Tensor:
    """``ssm_step_chunk`` on the layer's packed projection, batch-major, as the model holds it:
    proj [B, K, d_inner + conv_dim + nheads] (z | xBC | dt) -> [B, K, d_inner]. On CPU (numba,
    float32, no autograd, K > 1) one fused path without the split and transposes
    (``ssm_chunk_packed_cpu``); elsewhere the split, frame-major ``ssm_step_chunk``."""
    d_inner = ssm_state.shape[2] * ssm_state.shape[3]
    floats = (proj, conv_state, ssm_state, conv_w, conv_b, dt_bias, A_log, D)
    rest = (conv_state, ssm_state, slots, layer, conv_w, conv_b, dt_bias, A_log, D)
    if _numba_chunk(proj.shape[1], proj.is_cuda, slots, floats):
        return ssm_chunk_packed_cpu(proj, *rest)
    frames = proj.transpose(0, 1).contiguous()  # [K, B, P]: frame-major rows
    z, xbc, dt = torch.split(frames, [d_inner, conv_w.shape[0], ssm_state.shape[2]], dim=-1)
    return ssm_step_chunk(xbc, dt, z, *rest).transpose(0, 1)


def ssm_step_chunk_ref(
    xbc: torch.Tensor,
    dt: torch.Tensor,
    z: torch.Tensor,
    conv_state: torch.Tensor,
    ssm_state: torch.Tensor,
    slots: torch.Tensor,
    layer: int,
    conv_w: torch.Tensor,
    conv_b: torch.Tensor,
    dt_bias: torch.Tensor,
    A_log: torch.Tensor,
    D: torch.Tensor,
) -> torch.Tensor:
    """The plain definition of ``ssm_step_chunk``: K calls of ``ssm_step_ref``."""
    return torch.stack([ssm_step_ref(xbc[k], dt[k], z[k], conv_state, ssm_state, slots, layer, conv_w, conv_b,
                                     dt_bias, A_log, D) for k in range(xbc.shape[0])])


def _numba_chunk(frames: int, cuda: bool, slots: torch.Tensor, floats: tuple[torch.Tensor, ...]) -> bool:
    """Whether K frames go through the fused numba chunk (``ssm_chunk_packed_cpu``)."""
    return frames > 1 and not cuda and not _wants_grad(floats) and cpu_step_available(slots, *floats)


def _wants_grad(tensors: tuple[torch.Tensor, ...]) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
