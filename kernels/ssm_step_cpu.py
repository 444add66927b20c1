"""Fused CPU decoder step (numba): ``ssm_step_ref``'s math (ssm_step.py) in one pass over the state.

The eager torch step makes several passes over each row's state (gather, decay,
update, scatter, readout) plus temporaries; on this CPU that is the daemon's top
cost. This loop reads each state element once, writes it once and accumulates the
C readout on the way, row by row in place in the pool (no gather/scatter copies).
It releases the GIL, so the gRPC thread runs meanwhile.

Optional: ``ssm_step`` uses it on CPU when ``cpu_step_available`` says so (numba installed,
every tensor float32, int64 slots, no autograd); anything else, or ``NPC_VOICE_CPU_STEP=torch``,
takes ``ssm_step_torch``. Same results as ``ssm_step_ref`` within float rounding (the tests hold
it to that); deterministic and independent of batch composition.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

try:
    import numba
except ImportError:  # optional: the reference serves without it
    numba = None  # type: ignore[assignment]


def _rows_kernel(
    xbc: np.ndarray, dt: np.ndarray, z: np.ndarray, conv: np.ndarray, ssm: np.ndarray, slots: np.ndarray,
    layer: int, conv_w: np.ndarray, conv_b: np.ndarray, dt_bias: np.ndarray, a_log: np.ndarray, d: np.ndarray,
    out: np.ndarray,
) -> None:
    n_rows, conv_dim = xbc.shape
    nheads, headdim, d_state = ssm.shape[2], ssm.shape[3], ssm.shape[4]
    taps = conv.shape[2]  # d_conv - 1
    d_inner = nheads * headdim
    one = np.float32(1.0)
    xc = np.empty(conv_dim, dtype=np.float32)  # this row's conv + silu output (x | B | C)
    for b in range(n_rows):
        s = slots[b]
        cs = conv[s, layer]  # [taps, conv_dim] view into the pool
        for c in range(conv_dim):  # causal conv over (state taps, new input), then shift the state
            acc = conv_b[c]
            for k in range(taps):
                acc += cs[k, c] * conv_w[c, k]
            new = xbc[b, c]
            acc += new * conv_w[c, taps]
            for k in range(taps - 1):
                cs[k, c] = cs[k + 1, c]
            cs[taps - 1, c] = new
            xc[c] = acc / (one + np.exp(-acc))
        bv = xc[d_inner : d_inner + d_state]
        cv = xc[d_inner + d_state :]
        for h in range(nheads):
            v = dt[b, h] + dt_bias[h]
            dts = v if v > 20.0 else np.log1p(np.exp(v))  # softplus, torch's threshold
            decay = np.exp(-np.exp(a_log[h]) * dts)
            hs = ssm[s, layer, h]  # [headdim, d_state] view into the pool
            dh = d[h]
            for p in range(headdim):
                i = h * headdim + p
                xv = xc[i]
                u = dts * xv
                row = hs[p]
                y = np.float32(0.0)
                for n in range(d_state):
                    hv = row[n] * decay + u * bv[n]
                    row[n] = hv
                    y += hv * cv[n]
                zv = z[b, i]
                out[b, i] = (y + dh * xv) * (zv / (one + np.exp(-zv)))


def _conv_packed_kernel(
    proj: np.ndarray, off: int, conv: np.ndarray, slots: np.ndarray, layer: int, wt: np.ndarray,
    conv_b: np.ndarray, out: np.ndarray,
) -> None:
    """Causal depthwise conv of K frames per row, read from the packed projection: proj [B, K, P]
    (x|B|C at columns off..off+conv_dim), conv state [slots, layers, taps, conv_dim] (oldest
    first; its last ``taps`` inputs are written back), wt [taps + 1, conv_dim] (conv_w
    transposed) -> out [B, K, conv_dim] pre-activation. Multiply-adds only: it vectorizes."""
    n_rows, n_frames = proj.shape[0], proj.shape[1]
    conv_dim = out.shape[2]
    taps = conv.shape[2]
    win = np.empty((taps + n_frames, conv_dim), dtype=np.float32)  # state taps, then this call's inputs
    for b in range(n_rows):
        cs = conv[slots[b], layer]  # [taps, conv_dim] view into the pool
        for j in range(taps):
            for c in range(conv_dim):
                win[j, c] = cs[j, c]
        for k in range(n_frames):
            for c in range(conv_dim):
                win[taps + k, c] = proj[b, k, off + c]
        for k in range(n_frames):
            for c in range(conv_dim):
                out[b, k, c] = conv_b[c]
            for j in range(taps + 1):
                for c in range(conv_dim):
                    out[b, k, c] += win[k + j, c] * wt[j, c]
        for j in range(taps):
            for c in range(conv_dim):
                cs[j, c] = win[n_frames + j, c]


def _scan_packed_kernel(
    xc: np.ndarray, dts: np.ndarray, decay: np.ndarray, gz: np.ndarray, d: np.ndarray, ssm: np.ndarray,
    slots: np.ndarray, layer: int, out: np.ndarray,
) -> None:
    """The state recurrence of K frames, batch-major, with the skip and the gate folded in:
    xc [B, K, conv_dim] = silu(conv) (x | B | C), dts/decay [B, K, nheads], gz [B, K, d_inner] =
    silu(z) -> out [B, K, d_inner] = (h @ C + D * x) * gz per frame. Each state row is read and
    written once per call. A head's state is walked transposed ([d_state, headdim] scratch) for
    the call's K frames, so the inner loop runs along headdim: multiply-adds over contiguous
    vectors, the readout accumulated per lane with no horizontal sum (along d_state it was one
    16-wide sum per state row and frame: 1.7-2x slower; ``bench/ssm_scan.py``)."""
    n_rows, n_frames = xc.shape[0], xc.shape[1]
    nheads, headdim, d_state = ssm.shape[2], ssm.shape[3], ssm.shape[4]
    d_inner = nheads * headdim
    st = np.empty((d_state, headdim), dtype=np.float32)  # one head's state, transposed
    u = np.empty(headdim, dtype=np.float32)  # dt * x of this frame
    y = np.empty(headdim, dtype=np.float32)  # the readout h @ C of this frame
    for b in range(n_rows):
        s = slots[b]
        for h in range(nheads):
            hs = ssm[s, layer, h]  # [headdim, d_state] view into the pool
            for p in range(headdim):
                for n in range(d_state):
                    st[n, p] = hs[p, n]
            dh = d[h]
            base = h * headdim
            for k in range(n_frames):
                dk = decay[b, k, h]
                dtk = dts[b, k, h]
                for p in range(headdim):
                    u[p] = dtk * xc[b, k, base + p]
                    y[p] = 0.0
                for n in range(d_state):
                    bn = xc[b, k, d_inner + n]
                    cn = xc[b, k, d_inner + d_state + n]
                    for p in range(headdim):
                        val = st[n, p] * dk + u[p] * bn
                        st[n, p] = val
                        y[p] += val * cn
                for p in range(headdim):
                    out[b, k, base + p] = (y[p] + dh * xc[b, k, base + p]) * gz[b, k, base + p]
            for p in range(headdim):
                for n in range(d_state):
                    hs[p, n] = st[n, p]


# fastmath lets LLVM vectorize the loops and contract multiply-adds (rounding-level changes only).
_kernel: Any = numba.njit(cache=True, nogil=True, fastmath=True)(_rows_kernel) if numba is not None else None
_conv_packed: Any = numba.njit(cache=True, nogil=True, fastmath=True)(_conv_packed_kernel) if numba else None
_scan_packed: Any = numba.njit(cache=True, nogil=True, fastmath=True)(_scan_packed_kernel) if numba else None


def cpu_step_available(slots: torch.Tensor, *floats: torch.Tensor) -> bool:
    """Whether ``ssm_step_cpu`` and ``ssm_chunk_packed_cpu`` can take these tensors: numba is installed and
    not switched off (``NPC_VOICE_CPU_STEP=torch``), everything is on the CPU, ``slots`` int64 and
    every other tensor float32."""
    if _kernel is None or os.environ.get("NPC_VOICE_CPU_STEP", "") == "torch":
        return False
    tensors = (slots, *floats)
    return all(t.device.type == "cpu" for t in tensors) and slots.dtype == torch.int64 and all(
        t.dtype == torch.float32 for t in floats)


def _require(slots: torch.Tensor, *floats: torch.Tensor) -> None:
    if not cpu_step_available(slots, *floats):
        raise ValueError("the numba step needs numba, CPU tensors, int64 slots and float32 otherwise "
                         f"(got slots {slots.dtype}, {sorted({str(t.dtype) for t in floats})}); "
                         "call ssm_step, which chooses")


def ssm_step_cpu(
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
    """One decoder-layer step on CPU (numba), same shapes and math as ``ssm_step_ref``:

    xbc [B, conv_dim], dt [B, nheads], z [B, d_inner]; conv_state [slots, layers, d_conv-1,
    conv_dim] and ssm_state [slots, layers, nheads, headdim, d_state] updated in place at rows
    ``slots`` [B] (padding rows at scratch slot 0); conv_w [conv_dim, d_conv]; conv_b [conv_dim];
    dt_bias, A_log, D [nheads]. Returns [B, d_inner] float32. ValueError unless
    ``cpu_step_available``.
    """
    _require(slots, xbc, dt, z, conv_state, ssm_state, conv_w, conv_b, dt_bias, A_log, D)
    n_rows = xbc.shape[0]
    nheads, headdim = ssm_state.shape[2], ssm_state.shape[3]
    out = torch.empty((n_rows, nheads * headdim), dtype=torch.float32)
    if n_rows == 0:
        return out
    arrays = [t.detach().numpy() for t in (xbc, dt, z, conv_state, ssm_state, slots)]
    weights = [t.detach().numpy() for t in (conv_w, conv_b, dt_bias, A_log, D)]
    _kernel(*arrays, int(layer), *weights, out.numpy())
    return out


def ssm_chunk_packed_cpu(
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
    """K frames of ``ssm_step_cpu`` at once on the layer's packed input projection, batch-major:
    proj [B, K, d_inner + conv_dim + nheads] (z | x B C | dt, as ``in_proj`` makes it) ->
    [B, K, d_inner] float32; states updated in place as K single steps would.

    The conv reads the projection in place and shifts the conv state (numba), torch applies the
    activations in SIMD over all B*K rows (one exp per element instead of scalar calls in a loop),
    and the recurrence adds the skip and the gate on its way out (numba): no split, transpose or
    gather/scatter copies. ValueError unless ``cpu_step_available``."""
    _require(slots, proj, conv_state, ssm_state, conv_w, conv_b, dt_bias, A_log, D)
    n_rows, n_frames = proj.shape[0], proj.shape[1]
    nheads, headdim = ssm_state.shape[2], ssm_state.shape[3]
    d_inner = nheads * headdim
    conv_dim = conv_w.shape[0]
    if proj.shape[2] != d_inner + conv_dim + nheads:
        raise ValueError(f"proj has {proj.shape[2]} columns, expected z|xBC|dt = {d_inner}+{conv_dim}+{nheads}")
    y = torch.empty((n_rows, n_frames, d_inner), dtype=torch.float32)
    if n_rows == 0 or n_frames == 0:
        return y
    proj = proj.contiguous()
    pre = torch.empty((n_rows, n_frames, conv_dim), dtype=torch.float32)
    _conv_packed(proj.numpy(), d_inner, conv_state.detach().numpy(), slots.numpy(), int(layer),
                 conv_w.detach().t().contiguous().numpy(), conv_b.detach().numpy(), pre.numpy())
    xc = F.silu(pre, inplace=True)
    dts = F.softplus(proj[..., d_inner + conv_dim :] + dt_bias)  # [B, K, nheads]
    decay = torch.exp(dts * -torch.exp(A_log))
    gz = F.silu(proj[..., :d_inner])  # [B, K, d_inner], contiguous
    _scan_packed(xc.numpy(), dts.detach().numpy(), decay.detach().numpy(), gz.detach().numpy(),
                 D.detach().numpy(), ssm_state.detach().numpy(), slots.numpy(), int(layer), y.numpy())
    return y
