"""The decoder's step on CPU in compiled passes (numba) around BLAS projections.

The eager step (``denormalize(SSMDecoder.step_chunk(...))``) costs ~340 torch ops a call
whatever its size: per layer a norm, two projections, the activations and the wrappers around
the numba conv and recurrence (``ssm_step_cpu.py``), then the head. At one stream that is
~1.7 ms, ten times the arithmetic; at 32 streams the ops between the projections are a quarter
of the step. ``decoder_step_cpu`` does the same math (RMSNorm, in_proj, causal conv, SiLU,
softplus, the state recurrence, the gate, RMSNorm, out_proj, the residual; then the final norm,
the head and the features' de-normalisation) in two ways, both releasing the GIL:

- up to ``FUSED_MAX_ROWS`` rows (B * K: a new line's first piece, a short piece) every layer and
  the head in one compiled call, projections included (``_matmul``: faster than BLAS calls at
  these sizes, slower from ~160 rows);
- above, torch's BLAS does the projections and one compiled pass per layer does everything
  between them (``_mixer``), another the residual and the next norm: 2 + 4 per layer calls.

The SiLU's exp is written to vectorize (``_neg_exp``, within 3 ULP); softplus and the decay
use libm's. Same results as the eager step within float rounding (the tests hold it to that),
the states updated in place at ``slots`` as K single steps would. ``SSMVoice.step_params``
takes it on CPU unless ``NPC_VOICE_CPU_STEP=torch`` (or no numba, or autograd).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from npc_voice_kernels.ssm_step_cpu import _conv_packed, _scan_packed

try:
    import numba
except ImportError:  # optional: the eager step serves without it
    numba = None  # type: ignore[assignment]

FUSED_MAX_ROWS = 128  # B * K rows up to which one whole compiled call beats BLAS projections (bench/decoder_cpu.py)


@dataclass(frozen=True)
class DecoderArrays:
    """The decoder's weights as the kernels read them: float32, C-contiguous, the projections in
    nn.Linear's [out, in] layout, the conv's transposed ([taps, conv_dim]), every layer's stacked
    on a leading axis. Packed once per weights version (``SSMVoice._decoder_arrays``)."""

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
        raise ValueError(f"the compiled decoder step takes one RMSNorm eps, got {sorted(eps)}")
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


def _neg_exp(x: np.ndarray, out: np.ndarray, bits: np.ndarray) -> None:
    """out = exp(-x) over 1-D float32 arrays (``bits``: int32 scratch of the same length), in two
    loops that vectorize (libm's exp is a scalar call per element: ~4x slower here). Cody-Waite
    range reduction (ln 2 in two parts, exact products) and a degree-6 polynomial: within 3 ULP of
    the exact value over the clamped range [-88, 87.3] (2**-126 .. 1.6e38); compiled without
    reassociation (``_EXP_MATH``) so the reduction stays exact."""
    scale = bits.view(np.float32)
    for i in range(x.shape[0]):
        v = min(max(-x[i], np.float32(-87.3)), np.float32(88.0))
        k = np.floor(v * np.float32(1.4426950408889634) + np.float32(0.5))
        r = v - k * np.float32(0.693359375)
        r = r - k * np.float32(-2.12194440e-4)
        out[i] = np.float32(1.0) + r * (np.float32(1.0) + r * (np.float32(0.5) + r * (np.float32(1.0 / 6.0) + r * (
            np.float32(1.0 / 24.0) + r * (np.float32(1.0 / 120.0) + r * np.float32(1.0 / 720.0))))))
        bits[i] = (np.int32(k) + np.int32(127)) << np.int32(23)  # 2**k as a float's bits
    for i in range(x.shape[0]):
        out[i] = out[i] * scale[i]


def _silu(x: np.ndarray, e: np.ndarray, bits: np.ndarray) -> None:
    """x = x * sigmoid(x) in place over a 1-D float32 array (``e``, ``bits``: scratch as long)."""
    _neg_exp(x, e, bits)
    for i in range(x.shape[0]):
        x[i] = x[i] / (np.float32(1.0) + e[i])


def _mixer(proj: np.ndarray, conv_wt: np.ndarray, conv_b: np.ndarray, dt_bias: np.ndarray, neg_a: np.ndarray,
           d: np.ndarray, out_norm_w: np.ndarray, conv: np.ndarray, ssm: np.ndarray, slots: np.ndarray, layer: int,
           eps: float, n_rows: int, yn: np.ndarray) -> None:
    """One block between its projections: proj [B * K, d_inner + conv_dim + nheads] (z | xBC | dt,
    batch-major rows) -> yn [B * K, d_inner] = rms_norm((y + D x) * silu(z)) * out_norm_w. The
    causal conv and the state recurrence are ssm_step_cpu.py's kernels (``_conv_packed``,
    ``_scan_packed``); here the SiLUs (vectorized exp), softplus(dt), the decays and the norm."""
    rows, width = proj.shape
    n_frames = rows // n_rows
    nheads = ssm.shape[2]
    d_inner = yn.shape[1]
    conv_dim = conv_wt.shape[1]
    packed = proj.reshape(n_rows, n_frames, width)
    xc = np.empty((n_rows, n_frames, conv_dim), dtype=np.float32)  # conv(x | B | C), then its SiLU
    _conv_packed(packed, d_inner, conv, slots, layer, conv_wt, conv_b, xc)
    gz = np.empty((n_rows, n_frames, d_inner), dtype=np.float32)  # z, then its SiLU
    dts = np.empty((n_rows, n_frames, nheads), dtype=np.float32)
    decay = np.empty((n_rows, n_frames, nheads), dtype=np.float32)
    for b in range(n_rows):
        for k in range(n_frames):
            for c in range(d_inner):
                gz[b, k, c] = packed[b, k, c]
            for h in range(nheads):
                v = packed[b, k, d_inner + conv_dim + h] + dt_bias[h]
                dt = v if v > np.float32(20.0) else np.log1p(np.exp(v))  # softplus (torch's threshold)
                dts[b, k, h] = dt
                decay[b, k, h] = np.exp(dt * neg_a[h])
    e = np.empty(rows * max(conv_dim, d_inner), dtype=np.float32)
    bits = np.empty(rows * max(conv_dim, d_inner), dtype=np.int32)
    _silu(xc.reshape(rows * conv_dim), e[: rows * conv_dim], bits[: rows * conv_dim])
    _silu(gz.reshape(rows * d_inner), e[: rows * d_inner], bits[: rows * d_inner])
    y = np.empty((n_rows, n_frames, d_inner), dtype=np.float32)
    _scan_packed(xc, dts, decay, gz, d, ssm, slots, layer, y)
    _rms_norm(y.reshape(rows, d_inner), out_norm_w, eps, yn)


def _residual_norm(u: np.ndarray, out: np.ndarray, w: np.ndarray, eps: float, xn: np.ndarray) -> None:
    """u += out (the block's residual), then xn = rms_norm(u) * w (the next block's or the head's input)."""
    for r in range(u.shape[0]):
        for i in range(u.shape[1]):
            u[r, i] += out[r, i]
    _rms_norm(u, w, eps, xn)


def _denormalize(params: np.ndarray, feat_mean: np.ndarray, feat_std: np.ndarray, vuv: int) -> None:
    """The head's output in place -> vocoder parameters (the voicing column as a probability)."""
    for r in range(params.shape[0]):
        for f in range(params.shape[1]):
            v = params[r, f]
            if f == vuv:
                params[r, f] = np.float32(1.0) / (np.float32(1.0) + np.exp(-v))
            else:
                params[r, f] = v * feat_std[f] + feat_mean[f]


def _decoder_kernel(u: np.ndarray, norm_w: np.ndarray, in_w: np.ndarray, conv_wt: np.ndarray,
                    conv_b: np.ndarray, dt_bias: np.ndarray, neg_a: np.ndarray, d: np.ndarray,
                    out_norm_w: np.ndarray, out_w: np.ndarray, final_norm_w: np.ndarray, head_w: np.ndarray,
                    head_b: np.ndarray, feat_mean: np.ndarray, feat_std: np.ndarray, eps: float, vuv: int,
                    conv: np.ndarray, ssm: np.ndarray, slots: np.ndarray, n_rows: int, params: np.ndarray) -> None:
    """A small call whole: every layer, then the head, projections included (``_matmul``):
    u [B * K, d_model] (overwritten) -> params [B * K, n_features]."""
    n_layers = norm_w.shape[0]
    xn = np.empty_like(u)
    proj = np.empty((u.shape[0], in_w.shape[1]), dtype=np.float32)
    yn = np.empty((u.shape[0], out_w.shape[2]), dtype=np.float32)
    out = np.empty_like(u)
    _rms_norm(u, norm_w[0], eps, xn)
    for layer in range(n_layers):
        _matmul(xn, in_w[layer], proj)
        _mixer(proj, conv_wt[layer], conv_b[layer], dt_bias[layer], neg_a[layer], d[layer], out_norm_w[layer],
               conv, ssm, slots, layer, eps, n_rows, yn)
        _matmul(yn, out_w[layer], out)
        _residual_norm(u, out, norm_w[layer + 1] if layer + 1 < n_layers else final_norm_w, eps, xn)
    _matmul(xn, head_w, params)
    for r in range(params.shape[0]):
        for f in range(params.shape[1]):
            params[r, f] += head_b[f]
    _denormalize(params, feat_mean, feat_std, vuv)


_EXP_MATH = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}  # fastmath less reassociation (``_neg_exp``)

if numba is not None:  # fastmath: vectorized loops and contracted multiply-adds (rounding-level changes)
    _jit = numba.njit(cache=True, nogil=True, fastmath=True)
    _neg_exp = numba.njit(cache=True, nogil=True, fastmath=_EXP_MATH)(_neg_exp)
    _silu = _jit(_silu)
    _rms_norm = _jit(_rms_norm)
    _matmul = _jit(_matmul)
    _mixer = _jit(_mixer)
    _residual_norm = _jit(_residual_norm)
    _denormalize = _jit(_denormalize)
    _decoder_cpu: Any = _jit(_decoder_kernel)
else:
    _decoder_cpu = None


def fused_step_available(cond: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor) -> bool:
    """Whether ``decoder_step_cpu`` can take this call: numba installed, not switched off
    (``NPC_VOICE_CPU_STEP=torch``), CPU tensors, float32 states, no autograd."""
    if _decoder_cpu is None or os.environ.get("NPC_VOICE_CPU_STEP", "") == "torch":
        return False
    tensors = (cond, conv_state, ssm_state)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(t.device.type == "cpu" for t in tensors) and conv_state.dtype == ssm_state.dtype == torch.float32


def decoder_step_cpu(arrays: DecoderArrays, cond: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
                     slots: torch.Tensor) -> torch.Tensor:
    """cond [B, K, d_model] -> de-normalised vocoder parameters [B, K, n_features] (the voicing
    column as a probability), the states [slots, layers, ...] (float32) updated in place at
    ``slots`` [B]: what ``denormalize(SSMDecoder.step_chunk(...))`` returns.

    Up to ``FUSED_MAX_ROWS`` rows (B * K) one compiled call does everything; above, torch's BLAS
    does the projections (two per layer and the head) and compiled passes everything between
    them: 4 + 2 per layer calls instead of the eager decoder's ~340 ops."""
    if _decoder_cpu is None:
        raise RuntimeError("numba is not installed: use SSMDecoder.step_chunk")
    if conv_state.dtype != torch.float32 or ssm_state.dtype != torch.float32:
        raise ValueError(f"the fused step needs float32 states, got {conv_state.dtype} and {ssm_state.dtype}")
    n_rows, n_frames, width = cond.shape
    if width != arrays.norm_w.shape[1]:
        raise ValueError(f"cond has width {width}, the decoder {arrays.norm_w.shape[1]}")
    rows = n_rows * n_frames
    params = torch.empty((n_rows, n_frames, arrays.head_w.shape[0]), dtype=torch.float32)
    if rows == 0:
        return params
    a = arrays
    u = cond.detach().to(torch.float32).reshape(rows, width).numpy().copy()
    conv, ssm, slot_rows = conv_state.detach().numpy(), ssm_state.detach().numpy(), slots.to(torch.int64).numpy()
    if rows <= FUSED_MAX_ROWS:
        _decoder_cpu(u, a.norm_w, a.in_w, a.conv_wt, a.conv_b, a.dt_bias, a.neg_a, a.d, a.out_norm_w, a.out_w,
                     a.final_norm_w, a.head_w, a.head_b, a.feat_mean, a.feat_std, a.eps, a.vuv,
                     conv, ssm, slot_rows, n_rows, params.view(rows, -1).numpy())
        return params
    n_layers = a.norm_w.shape[0]
    xn = np.empty_like(u)
    yn = torch.empty((rows, a.out_w.shape[2]), dtype=torch.float32)
    _rms_norm(u, a.norm_w[0], a.eps, xn)
    xn_t = torch.from_numpy(xn)
    in_w, out_w = torch.from_numpy(a.in_w), torch.from_numpy(a.out_w)  # views of the packed weights
    for layer in range(n_layers):
        proj = torch.nn.functional.linear(xn_t, in_w[layer])
        _mixer(proj.numpy(), a.conv_wt[layer], a.conv_b[layer], a.dt_bias[layer], a.neg_a[layer], a.d[layer],
               a.out_norm_w[layer], conv, ssm, slot_rows, layer, a.eps, n_rows, yn.numpy())
        out = torch.nn.functional.linear(yn, out_w[layer])
        _residual_norm(u, out.numpy(), a.norm_w[layer + 1] if layer + 1 < n_layers else a.final_norm_w, a.eps, xn)
    torch.addmm(torch.from_numpy(a.head_b), xn_t, torch.from_numpy(a.head_w).t(), out=params.view(rows, -1))
    _denormalize(params.view(rows, -1).numpy(), a.feat_mean, a.feat_std, a.vuv)
    return params
