"""Fused decoder step for one Mamba-2 style layer, gathered from a state pool.

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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from npc_voice_kernels.ssm_step_cpu import cpu_step_available, ssm_chunk_cpu, ssm_step_cpu


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
    """Pure-torch reference. Shapes:

    xbc        [B, conv_dim]  pre-conv x|B|C for this layer (fp32 or bf16)
    dt         [B, nheads]    raw dt (before bias and softplus)
    z          [B, d_inner]   gate
    conv_state [slots, layers, d_conv - 1, conv_dim]  oldest first; updated in place
    ssm_state  [slots, layers, nheads, headdim, d_state] fp32; updated in place
    slots      [B] int64; padding rows point at scratch slot 0
    conv_w     [conv_dim, d_conv]; conv_b [conv_dim]
    dt_bias, A_log, D  [nheads]
    returns    [B, d_inner] in xbc's dtype
    """
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


def ssm_step(*args: object, **kwargs: object) -> torch.Tensor:
    """Dispatch: the Triton kernel on CUDA tensors; on CPU the fused numba loop
    (ssm_step_cpu.py) when numba is installed, float32 and no autograd is wanted,
    else the reference. ``NPC_VOICE_CPU_STEP=ref`` forces the reference.

    Same signature and shapes as ``ssm_step_ref``."""
    xbc = args[0] if args else kwargs["xbc"]
    assert isinstance(xbc, torch.Tensor)
    if xbc.is_cuda:
        from npc_voice_kernels.ssm_step_triton import ssm_step_triton  # noqa: PLC0415

        return ssm_step_triton(*args, **kwargs)  # type: ignore[arg-type]
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if not wants_grad and cpu_step_available(*tensors):
        return ssm_step_cpu(*args, **kwargs)  # type: ignore[arg-type]
    return ssm_step_ref(*args, **kwargs)  # type: ignore[arg-type]



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
    -> [K, B, d_inner]; the states end as after K single steps. On CPU the fused numba chunk kernel
    (each state row read and written once per call); elsewhere K calls of ``ssm_step``."""
    args = (conv_state, ssm_state, slots, layer, conv_w, conv_b, dt_bias, A_log, D)
    tensors = [xbc, dt, z, conv_state, ssm_state, slots, conv_w, conv_b, dt_bias, A_log, D]
    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if not xbc.is_cuda and not wants_grad and cpu_step_available(*tensors):
        return ssm_chunk_cpu(xbc, dt, z, *args)
    return torch.stack([ssm_step(xbc[k], dt[k], z[k], *args) for k in range(xbc.shape[0])])


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
