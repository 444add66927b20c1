"""The whole decoder step of a small call in one compiled pass (numba, CPU).

A call of a few rows (a new line's first piece: 1-4 streams x K frames) costs the eager step
~340 torch ops whatever its size: per layer a norm, two projections, the activations and the
wrappers around the numba conv and recurrence (``ssm_step_cpu.py``), then the head. At one
stream that is ~1.7 ms, ten times the arithmetic. ``decoder_step_cpu`` runs every layer and the
head in one call that releases the GIL: the same math (RMSNorm, in_proj, causal conv, SiLU,
softplus, the state recurrence, the gate, RMSNorm, out_proj, the residual; then the final norm,
the head and the features' de-normalisation) with its own loops.

Only for small calls: its projections are plain loops and its exp is a scalar call per element,
so from ~200 rows up the eager step (BLAS products, SIMD activations) is faster; ``SSMVoice``
chooses (``FUSED_MAX_ROWS``). Same results as the eager step within float rounding (the tests
hold it to that), the states updated in place at ``slots`` as K single steps would.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

try:
    import numba
except ImportError:  # optional: the eager step serves without it
    numba = None  # type: ignore[assignment]

FUSED_MAX_ROWS = 128  # B * K rows up to which the fused step beats the eager one (bench/decoder_small.py)


@dataclass(frozen=True)
class DecoderArrays:
    """The decoder's weights as the kernel reads them: float32, C-contiguous, the projections
    the conv's transposed ([taps, conv_dim]) and every layer's stacked on a leading axis. Built once per weights
    version (``decoder_arrays``)."""

    norm_w: np.ndarray  # [L, d_model]
    in_w: np.ndarray  # [L, d_inner + conv_dim + nheads, d_model] (nn.Linear's layout, as all three)
    conv_wt: np.ndarray  # [L, d_conv, conv_dim]
    conv_b: np.ndarray  # [L, conv_dim]
    dt_bias: np.ndarray  # [L, nheads]
    neg_a: np.ndarray  # [L, nheads]: -exp(A_log)
    d: np.ndarray  # [L, nheads]
    out_norm_w: np.ndarray  # [L, d_inner]
    out_w: np.ndarray  # [L, d_model, d_inner]
    final_norm_w: np.ndarray  # [d_model]
    head_w: np.ndarray  # [n_features, d_model]
    head_b: np.ndarray  # [n_features]
    feat_mean: np.ndarray  # [n_features]
    feat_std: np.ndarray  # [n_features]
    eps: float
    vuv: int  # the feature column that is a logit (sigmoid, not de-normalised)


def _array(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


def pack_decoder(blocks: Any, final_norm: Any, head: Any, feat_mean: torch.Tensor, feat_std: torch.Tensor,
                 vuv: int) -> DecoderArrays:
    """``DecoderArrays`` from the decoder's modules (SSMBlock-like: norm, in_proj, conv_w, conv_b,
    dt_bias, A_log, D, out_norm, out_proj; all RMSNorms with one eps)."""
    def stack(fn: Any) -> np.ndarray:
        return np.ascontiguousarray(np.stack([_array(fn(b)) for b in blocks]))

    eps = {float(b.norm.eps) for b in blocks} | {float(b.out_norm.eps) for b in blocks} | {float(final_norm.eps)}
    if len(eps) != 1:
        raise ValueError(f"the fused decoder step takes one RMSNorm eps, got {sorted(eps)}")
    with torch.no_grad():
        return DecoderArrays(
            norm_w=stack(lambda b: b.norm.weight), in_w=stack(lambda b: b.in_proj.weight),
            conv_wt=stack(lambda b: b.conv_w.t()), conv_b=stack(lambda b: b.conv_b),
            dt_bias=stack(lambda b: b.dt_bias), neg_a=stack(lambda b: -torch.exp(b.A_log)), d=stack(lambda b: b.D),
            out_norm_w=stack(lambda b: b.out_norm.weight), out_w=stack(lambda b: b.out_proj.weight),
            final_norm_w=_array(final_norm.weight), head_w=_array(head.weight), head_b=_array(head.bias),
            feat_mean=_array(feat_mean), feat_std=_array(feat_std), eps=eps.pop(), vuv=int(vuv))


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float, out: np.ndarray) -> None:
    """out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, rows of [R, I]."""
    n_rows, width = x.shape
    for r in range(n_rows):
        s = np.float32(0.0)
        for i in range(width):
            s += x[r, i] * x[r, i]
        inv = np.float32(1.0) / np.sqrt(s / np.float32(width) + np.float32(eps))
        for i in range(width):
            out[r, i] = x[r, i] * inv * w[i]


def _matmul(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """out = x @ w.T ([R, I] by [J, I], nn.Linear's layout): eight rows at a time, each output a
    dot product along I held in a register (the reductions vectorize), each weight row loaded
    once for the eight. At 64 rows within ~1.4x of BLAS, at 8 rows faster than torch's call."""
    n_rows, width = x.shape
    cols = w.shape[0]
    zero = np.float32(0.0)
    r = 0
    while r + 8 <= n_rows:
        for j in range(cols):
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
            for i in range(width):
                wv = w[j, i]
                s0 += x[r, i] * wv
                s1 += x[r + 1, i] * wv
                s2 += x[r + 2, i] * wv
                s3 += x[r + 3, i] * wv
                s4 += x[r + 4, i] * wv
                s5 += x[r + 5, i] * wv
                s6 += x[r + 6, i] * wv
                s7 += x[r + 7, i] * wv
            out[r, j], out[r + 1, j], out[r + 2, j], out[r + 3, j] = s0, s1, s2, s3
            out[r + 4, j], out[r + 5, j], out[r + 6, j], out[r + 7, j] = s4, s5, s6, s7
        r += 8
    while r < n_rows:
        for j in range(cols):
            s = zero
            for i in range(width):
                s += x[r, i] * w[j, i]
            out[r, j] = s
        r += 1


def _layer(u: np.ndarray, norm_w: np.ndarray, in_w: np.ndarray, conv_wt: np.ndarray, conv_b: np.ndarray,
           dt_bias: np.ndarray, neg_a: np.ndarray, d: np.ndarray, out_norm_w: np.ndarray, out_w: np.ndarray,
           conv: np.ndarray, ssm: np.ndarray, slots: np.ndarray, layer: int, eps: float, n_rows: int) -> None:
    """One SSM block over u [B * K, d_model] (batch-major rows), in place: u += block(u)."""
    n_frames = u.shape[0] // n_rows
    nheads, headdim, d_state = ssm.shape[2], ssm.shape[3], ssm.shape[4]
    d_inner = nheads * headdim
    conv_dim = conv_wt.shape[1]
    taps = conv.shape[2]
    one = np.float32(1.0)
    xn = np.empty((u.shape[0], u.shape[1]), dtype=np.float32)
    _rms_norm(u, norm_w, eps, xn)
    proj = np.empty((u.shape[0], in_w.shape[0]), dtype=np.float32)  # z | xBC | dt per row
    _matmul(xn, in_w, proj)
    y = np.empty((u.shape[0], d_inner), dtype=np.float32)
    win = np.empty((taps + n_frames, conv_dim), dtype=np.float32)  # conv state taps, then the call's inputs
    xc = np.empty((n_frames, conv_dim), dtype=np.float32)  # silu(conv): x | B | C per frame
    st = np.empty((d_state, headdim), dtype=np.float32)  # one head's state, transposed
    dx = np.empty(headdim, dtype=np.float32)
    acc = np.empty(headdim, dtype=np.float32)
    for b in range(n_rows):
        row0 = b * n_frames
        cs = conv[slots[b], layer]  # [taps, conv_dim] view into the pool
        for j in range(taps):
            for c in range(conv_dim):
                win[j, c] = cs[j, c]
        for k in range(n_frames):
            for c in range(conv_dim):
                win[taps + k, c] = proj[row0 + k, d_inner + c]
        for k in range(n_frames):
            for c in range(conv_dim):
                xc[k, c] = conv_b[c]
            for j in range(taps + 1):
                for c in range(conv_dim):
                    xc[k, c] += win[k + j, c] * conv_wt[j, c]
            for c in range(conv_dim):
                v = xc[k, c]
                xc[k, c] = v / (one + np.exp(-v))
        for j in range(taps):
            for c in range(conv_dim):
                cs[j, c] = win[n_frames + j, c]
        s = slots[b]
        for h in range(nheads):
            hs = ssm[s, layer, h]  # [headdim, d_state] view into the pool
            for p in range(headdim):
                for n in range(d_state):
                    st[n, p] = hs[p, n]
            base = h * headdim
            for k in range(n_frames):
                v = proj[row0 + k, d_inner + conv_dim + h] + dt_bias[h]
                dt = v if v > np.float32(20.0) else np.log1p(np.exp(v))  # softplus (torch's threshold)
                decay = np.exp(dt * neg_a[h])
                for p in range(headdim):
                    dx[p] = dt * xc[k, base + p]
                    acc[p] = 0.0
                for n in range(d_state):
                    bn = xc[k, d_inner + n]
                    cn = xc[k, d_inner + d_state + n]
                    for p in range(headdim):
                        val = st[n, p] * decay + dx[p] * bn
                        st[n, p] = val
                        acc[p] += val * cn
                for p in range(headdim):
                    z = proj[row0 + k, base + p]
                    y[row0 + k, base + p] = (acc[p] + d[h] * xc[k, base + p]) * (z / (one + np.exp(-z)))
            for p in range(headdim):
                for n in range(d_state):
                    hs[p, n] = st[n, p]
    yn = np.empty_like(y)
    _rms_norm(y, out_norm_w, eps, yn)
    out = np.empty_like(u)
    _matmul(yn, out_w, out)
    for r in range(u.shape[0]):
        for i in range(u.shape[1]):
            u[r, i] += out[r, i]


def _decoder_kernel(u: np.ndarray, norm_w: np.ndarray, in_w: np.ndarray, conv_wt: np.ndarray,
                    conv_b: np.ndarray, dt_bias: np.ndarray, neg_a: np.ndarray, d: np.ndarray,
                    out_norm_w: np.ndarray, out_w: np.ndarray, final_norm_w: np.ndarray, head_w: np.ndarray,
                    head_b: np.ndarray, feat_mean: np.ndarray, feat_std: np.ndarray, eps: float, vuv: int,
                    conv: np.ndarray, ssm: np.ndarray, slots: np.ndarray, n_rows: int, params: np.ndarray) -> None:
    """Every layer, then the head: u [B * K, d_model] (overwritten) -> params [B * K, n_features]."""
    for layer in range(norm_w.shape[0]):
        _layer(u, norm_w[layer], in_w[layer], conv_wt[layer], conv_b[layer], dt_bias[layer], neg_a[layer],
               d[layer], out_norm_w[layer], out_w[layer], conv, ssm, slots, layer, eps, n_rows)
    un = np.empty_like(u)
    _rms_norm(u, final_norm_w, eps, un)
    _matmul(un, head_w, params)
    one = np.float32(1.0)
    for r in range(params.shape[0]):
        for f in range(params.shape[1]):
            v = params[r, f] + head_b[f]
            params[r, f] = one / (one + np.exp(-v)) if f == vuv else v * feat_std[f] + feat_mean[f]


if numba is not None:  # fastmath: vectorized loops and contracted multiply-adds (rounding-level changes)
    _jit = numba.njit(cache=True, nogil=True, fastmath=True)
    _rms_norm = _jit(_rms_norm)
    _matmul = _jit(_matmul)
    _layer = _jit(_layer)
    _decoder_cpu: Any = _jit(_decoder_kernel)
else:
    _decoder_cpu = None


def fused_step_available(rows: int, *tensors: torch.Tensor) -> bool:
    """Whether ``decoder_step_cpu`` should take a call of ``rows`` (B * K) rows: numba installed,
    not switched off (``NPC_VOICE_CPU_STEP=torch``), a small call, CPU tensors, no autograd."""
    if _decoder_cpu is None or rows > FUSED_MAX_ROWS or os.environ.get("NPC_VOICE_CPU_STEP", "") == "torch":
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(t.device.type == "cpu" for t in tensors)


def decoder_step_cpu(arrays: DecoderArrays, cond: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
                     slots: torch.Tensor) -> torch.Tensor:
    """cond [B, K, d_model] -> de-normalised vocoder parameters [B, K, n_features] (the voicing
    column as a probability), the states [slots, layers, ...] (float32) updated in place at
    ``slots`` [B]: what ``denormalize(SSMDecoder.step_chunk(...))`` returns."""
    if _decoder_cpu is None:
        raise RuntimeError("numba is not installed: use SSMDecoder.step_chunk")
    if conv_state.dtype != torch.float32 or ssm_state.dtype != torch.float32:
        raise ValueError(f"the fused step needs float32 states, got {conv_state.dtype} and {ssm_state.dtype}")
    n_rows, n_frames, width = cond.shape
    if width != arrays.norm_w.shape[1]:
        raise ValueError(f"cond has width {width}, the decoder {arrays.norm_w.shape[1]}")
    params = torch.empty((n_rows, n_frames, arrays.head_w.shape[0]), dtype=torch.float32)
    if n_rows == 0 or n_frames == 0:
        return params
    u = cond.detach().to(torch.float32).reshape(n_rows * n_frames, width).numpy().copy()
    a = arrays
    _decoder_cpu(u, a.norm_w, a.in_w, a.conv_wt, a.conv_b, a.dt_bias, a.neg_a, a.d, a.out_norm_w, a.out_w,
                 a.final_norm_w, a.head_w, a.head_b, a.feat_mean, a.feat_std, a.eps, a.vuv,
                 conv_state.detach().numpy(), ssm_state.detach().numpy(), slots.to(torch.int64).numpy(), n_rows,
                 params.view(n_rows * n_frames, -1).numpy())
    return params
