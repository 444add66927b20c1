"""Fused Triton decoder step: exactly ``ssm_step_ref``'s math (see ssm_step.py).

Two launches per layer, in stream order:

1. ``_ssm_step_kernel``, one program per (row, head): gathers the row's slot,
   runs the causal conv + silu for the head's ``headdim`` x-channels and for the
   shared B/C channels, the selective state update for the head's
   ``[headdim, d_state]`` block of fp32 state, the C readout, D skip and z gate.
   It shifts the conv state of the head's own x-channels in place (no other
   program touches those channels), and only *reads* the B/C conv state.
2. ``_bc_conv_shift_kernel``, one program per row: shifts the B/C channels of
   the conv state. B and C are shared by every head, so their state may only be
   written after all heads have read it; a second launch is the ordering
   guarantee (a barrier between programs does not exist).

Padding rows point at scratch slot 0; several of them race on slot 0, which is
harmless by contract (slot 0 is never read back as a character's state, and
padding outputs are discarded). A non-zero slot must appear at most once per
batch (an engine invariant: one active stream per character).

No autotune: the kernel updates state in place, so a benchmark run of a
candidate config would corrupt the state.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _silu(v):
    return v * tl.sigmoid(v)


@triton.jit
def _ssm_step_kernel(
    xbc_ptr, dt_ptr, z_ptr, out_ptr, slots_ptr,
    conv_ptr, ssm_ptr,
    conv_w_ptr, conv_b_ptr, dt_bias_ptr, a_log_ptr, d_ptr,
    layer,
    stride_xbc_b, stride_dt_b, stride_z_b, stride_out_b,
    stride_conv_s, stride_conv_l, stride_conv_k, stride_conv_c,
    stride_ssm_s, stride_ssm_l, stride_ssm_h, stride_ssm_p, stride_ssm_n,
    stride_w_c, stride_w_k,
    HEADDIM: tl.constexpr, D_STATE: tl.constexpr, D_INNER: tl.constexpr, D_CONV: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0)
    head = tl.program_id(1)
    slot = tl.load(slots_ptr + row).to(tl.int64)

    offs_p = tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p = offs_p < HEADDIM
    mask_n = offs_n < D_STATE
    ch_x = head * HEADDIM + offs_p  # this head's x channels
    ch_b = D_INNER + offs_n  # shared B channels
    ch_c = D_INNER + D_STATE + offs_n  # shared C channels

    conv_base = conv_ptr + slot * stride_conv_s + layer * stride_conv_l
    acc_x = tl.load(conv_b_ptr + ch_x, mask=mask_p, other=0.0).to(tl.float32)
    acc_b = tl.load(conv_b_ptr + ch_b, mask=mask_n, other=0.0).to(tl.float32)
    acc_c = tl.load(conv_b_ptr + ch_c, mask=mask_n, other=0.0).to(tl.float32)
    # Taps 0 .. D_CONV-2 come from the state (oldest first). Each x-channel value is
    # stored one tap down right after it is read; loads and stores of a channel use
    # the same 1-D layout, so one thread does both, in program order.
    for k in tl.static_range(D_CONV - 1):
        v_x = tl.load(conv_base + k * stride_conv_k + ch_x * stride_conv_c, mask=mask_p, other=0.0)
        v_b = tl.load(conv_base + k * stride_conv_k + ch_b * stride_conv_c, mask=mask_n, other=0.0)
        v_c = tl.load(conv_base + k * stride_conv_k + ch_c * stride_conv_c, mask=mask_n, other=0.0)
        if k >= 1:
            tl.store(conv_base + (k - 1) * stride_conv_k + ch_x * stride_conv_c, v_x, mask=mask_p)
        w_x = tl.load(conv_w_ptr + ch_x * stride_w_c + k * stride_w_k, mask=mask_p, other=0.0).to(tl.float32)
        w_b = tl.load(conv_w_ptr + ch_b * stride_w_c + k * stride_w_k, mask=mask_n, other=0.0).to(tl.float32)
        w_c = tl.load(conv_w_ptr + ch_c * stride_w_c + k * stride_w_k, mask=mask_n, other=0.0).to(tl.float32)
        acc_x += v_x.to(tl.float32) * w_x
        acc_b += v_b.to(tl.float32) * w_b
        acc_c += v_c.to(tl.float32) * w_c
    # The newest tap is this frame's input.
    xbc_row = xbc_ptr + row * stride_xbc_b
    new_x = tl.load(xbc_row + ch_x, mask=mask_p, other=0.0).to(tl.float32)
    new_b = tl.load(xbc_row + ch_b, mask=mask_n, other=0.0).to(tl.float32)
    new_c = tl.load(xbc_row + ch_c, mask=mask_n, other=0.0).to(tl.float32)
    last = D_CONV - 1
    tl.store(
        conv_base + (D_CONV - 2) * stride_conv_k + ch_x * stride_conv_c,
        new_x.to(conv_ptr.dtype.element_ty), mask=mask_p,
    )
    acc_x += new_x * tl.load(conv_w_ptr + ch_x * stride_w_c + last * stride_w_k, mask=mask_p, other=0.0).to(tl.float32)
    acc_b += new_b * tl.load(conv_w_ptr + ch_b * stride_w_c + last * stride_w_k, mask=mask_n, other=0.0).to(tl.float32)
    acc_c += new_c * tl.load(conv_w_ptr + ch_c * stride_w_c + last * stride_w_k, mask=mask_n, other=0.0).to(tl.float32)
    x = _silu(acc_x)  # [BLOCK_P]
    bv = _silu(acc_b)  # [BLOCK_N]
    cv = _silu(acc_c)  # [BLOCK_N]

    # dt softplus (torch's threshold 20) and the scalar decay of this head.
    dt_raw = tl.load(dt_ptr + row * stride_dt_b + head).to(tl.float32) + tl.load(dt_bias_ptr + head).to(tl.float32)
    dt = tl.where(dt_raw > 20.0, dt_raw, tl.log(1.0 + tl.exp(dt_raw)))
    d_a = tl.exp(-tl.exp(tl.load(a_log_ptr + head).to(tl.float32)) * dt)

    mask_pn = mask_p[:, None] & mask_n[None, :]
    h_ptrs = (
        ssm_ptr + slot * stride_ssm_s + layer * stride_ssm_l + head * stride_ssm_h
        + offs_p[:, None] * stride_ssm_p + offs_n[None, :] * stride_ssm_n
    )
    h = tl.load(h_ptrs, mask=mask_pn, other=0.0)  # [BLOCK_P, BLOCK_N] fp32
    h = h * d_a + (dt * x)[:, None] * bv[None, :]
    tl.store(h_ptrs, h, mask=mask_pn)

    y = tl.sum(h * cv[None, :], axis=1) + tl.load(d_ptr + head).to(tl.float32) * x
    zg = tl.load(z_ptr + row * stride_z_b + ch_x, mask=mask_p, other=0.0).to(tl.float32)
    out = y * _silu(zg)
    tl.store(out_ptr + row * stride_out_b + ch_x, out.to(out_ptr.dtype.element_ty), mask=mask_p)


@triton.jit
def _bc_conv_shift_kernel(
    xbc_ptr, slots_ptr, conv_ptr,
    layer,
    stride_xbc_b, stride_conv_s, stride_conv_l, stride_conv_k, stride_conv_c,
    D_INNER: tl.constexpr, N_BC: tl.constexpr, D_CONV: tl.constexpr, BLOCK_BC: tl.constexpr,
):
    row = tl.program_id(0)
    slot = tl.load(slots_ptr + row).to(tl.int64)
    offs = tl.arange(0, BLOCK_BC)
    mask = offs < N_BC
    ch = D_INNER + offs  # B and C channels, contiguous after x
    conv_base = conv_ptr + slot * stride_conv_s + layer * stride_conv_l
    for k in tl.static_range(1, D_CONV - 1):
        v = tl.load(conv_base + k * stride_conv_k + ch * stride_conv_c, mask=mask, other=0.0)
        tl.store(conv_base + (k - 1) * stride_conv_k + ch * stride_conv_c, v, mask=mask)
    new = tl.load(xbc_ptr + row * stride_xbc_b + ch, mask=mask, other=0.0).to(tl.float32)
    last_tap = conv_base + (D_CONV - 2) * stride_conv_k + ch * stride_conv_c
    tl.store(last_tap, new.to(conv_ptr.dtype.element_ty), mask=mask)


def ssm_step_triton(
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
    """One decoder-layer step for a batch of pool rows (Triton). Shapes:

    xbc        [B, conv_dim]  pre-conv x|B|C, conv_dim = d_inner + 2 * d_state (fp32 or bf16)
    dt         [B, nheads]    raw dt (before bias and softplus)
    z          [B, d_inner]   gate
    conv_state [slots, layers, d_conv - 1, conv_dim]  oldest first; updated in place
    ssm_state  [slots, layers, nheads, headdim, d_state] fp32; updated in place
    slots      [B] int32/int64; padding rows point at scratch slot 0; other slots unique
    conv_w     [conv_dim, d_conv]; conv_b [conv_dim]
    dt_bias, A_log, D  [nheads]
    returns    [B, d_inner] in xbc's dtype

    The last dimension of xbc, dt, z and out must be contiguous; the pools may
    have any strides. Same results as ``ssm_step_ref`` within float rounding.
    """
    n_rows, conv_dim = xbc.shape
    n_slots, n_layers, conv_taps, conv_dim_state = conv_state.shape
    nheads, headdim, d_state = ssm_state.shape[2:]
    d_inner = nheads * headdim
    d_conv = conv_taps + 1
    if conv_dim != d_inner + 2 * d_state or conv_dim_state != conv_dim:
        raise ValueError(
            f"xbc width {conv_dim} / conv_state width {conv_dim_state} != d_inner + 2*d_state "
            f"= {d_inner} + 2*{d_state} (from ssm_state shape {tuple(ssm_state.shape)})"
        )
    if ssm_state.dtype != torch.float32:
        raise ValueError(f"ssm_state must be float32, got {ssm_state.dtype}")
    if d_conv < 2:
        raise ValueError(f"conv_state has {conv_taps} taps; need d_conv >= 2")
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range for {n_layers} layers")
    if tuple(conv_w.shape) != (conv_dim, d_conv):
        raise ValueError(f"conv_w shape {tuple(conv_w.shape)} != ({conv_dim}, {d_conv})")
    for name, t in (("xbc", xbc), ("dt", dt), ("z", z)):
        if t.shape[0] != n_rows or t.stride(-1) != 1:
            raise ValueError(f"{name} must be [{n_rows}, ...] with a contiguous last dim, got {tuple(t.shape)}")
    out = torch.empty((n_rows, d_inner), dtype=xbc.dtype, device=xbc.device)
    if n_rows == 0:
        return out
    conv_b, dt_bias, A_log, D = (t.contiguous() for t in (conv_b, dt_bias, A_log, D))
    _ssm_step_kernel[(n_rows, nheads)](
        xbc, dt, z, out, slots,
        conv_state, ssm_state,
        conv_w, conv_b, dt_bias, A_log, D,
        layer,
        xbc.stride(0), dt.stride(0), z.stride(0), out.stride(0),
        *conv_state.stride(),
        *ssm_state.stride(),
        conv_w.stride(0), conv_w.stride(1),
        HEADDIM=headdim, D_STATE=d_state, D_INNER=d_inner, D_CONV=d_conv,
        BLOCK_P=triton.next_power_of_2(headdim), BLOCK_N=triton.next_power_of_2(d_state),
        num_warps=4,
    )
    _bc_conv_shift_kernel[(n_rows,)](
        xbc, slots, conv_state,
        layer,
        xbc.stride(0), *conv_state.stride(),
        D_INNER=d_inner, N_BC=2 * d_state, D_CONV=d_conv, BLOCK_BC=triton.next_power_of_2(2 * d_state),
        num_warps=1,
    )
    return out
