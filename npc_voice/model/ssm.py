"""Causal selective SSM decoder block (Mamba-2 style), with two equal paths.

``SSMBlock.forward`` runs a whole sequence with the chunked parallel scan (training,
prefill). ``SSMBlock.step`` advances one frame against a state pool through
``npc_voice_kernels.ssm_step`` (Triton on CUDA, the torch reference on CPU), so the
engine always runs the kernel's math. tests/test_model.py keeps the two equal.

Per layer (conv_dim = d_inner + 2 * d_state, nheads * headdim = d_inner):
    z, xBC, dt = in_proj(rmsnorm(u))
    xBC = silu(causal_conv(xBC));  x, B, C = split(xBC)
    h_t = exp(-exp(A_log) * dt_t) * h_{t-1} + dt_t * x_t B_t^T;  y_t = h_t C_t + D x_t
    u = u + out_proj(rmsnorm(y * silu(z)))
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from npc_voice_kernels import ssm_step, ssm_step_chunk_packed
from torch import nn

from npc_voice.model.config import ModelConfig


def segsum(a: torch.Tensor) -> torch.Tensor:
    """[..., T] -> [..., T, T]: out[i, j] = a[j+1] + ... + a[i] for i >= j, -inf above the diagonal."""
    T = a.shape[-1]
    x = a[..., None].expand(*a.shape, T)  # x[..., i, j] = a[i]
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=-1)
    x = x.masked_fill(~strict, 0.0)
    out = torch.cumsum(x, dim=-2)
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=0)
    return out.masked_fill(~lower, -math.inf)


def ssd_scan(
    x: torch.Tensor,  # [b, l, h, p]
    dt: torch.Tensor,  # [b, l, h] after softplus
    A: torch.Tensor,  # [h] negative decay rates
    B: torch.Tensor,  # [b, l, n] (one group shared by all heads)
    C: torch.Tensor,  # [b, l, n]
    chunk: int,
    init_state: torch.Tensor | None = None,  # [b, h, p, n]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked scan of h_t = exp(A dt_t) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t.

    Returns y [b, l, h, p] and the final state [b, h, p, n]."""
    b, l, h, p = x.shape
    n = B.shape[-1]
    pad = (-l) % chunk
    if pad:  # padding at the end cannot change earlier outputs (causal); it does move the final state
        x, dt = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    c = (l + pad) // chunk
    X = (x * dt[..., None]).reshape(b, c, chunk, h, p)
    a = (dt * A).reshape(b, c, chunk, h).permute(0, 3, 1, 2)  # [b, h, c, q] log decay per step
    Bc, Cc = B.reshape(b, c, chunk, n), C.reshape(b, c, chunk, n)
    a_cum = torch.cumsum(a, dim=-1)  # [b, h, c, q]

    # 1. within each chunk (a masked, decayed "attention" C_l . B_s)
    Lmat = torch.exp(segsum(a))  # [b, h, c, l, s]
    CB = torch.einsum("bcln,bcsn->bcls", Cc, Bc)
    y_diag = torch.einsum("bhcls,bcshp->bclhp", Lmat * CB[:, None], X)

    # 2. state at the end of each chunk from its own inputs
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # [b, h, c, q]
    states = torch.einsum("bcsn,bhcs,bcshp->bchpn", Bc, decay_to_end, X)

    # 3. pass states across chunks
    if init_state is None:
        init_state = torch.zeros(b, h, p, n, dtype=x.dtype, device=x.device)
    states = torch.cat([init_state[:, None], states], dim=1)  # [b, c+1, h, p, n]
    decay_chunk = torch.exp(segsum(F.pad(a_cum[..., -1], (1, 0))))  # [b, h, c+1, c+1]
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    prev_states, final = states[:, :-1], states[:, -1]

    # 4. contribution of the carried-in state to each position
    y_off = torch.einsum("bcln,bchpn,bhcl->bclhp", Cc, prev_states, torch.exp(a_cum))
    y = (y_diag + y_off).reshape(b, c * chunk, h, p)[:, :l]
    return y, final


class SSMBlock(nn.Module):
    """Pre-norm residual Mamba-2 style block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d_in, n, H = cfg.d_inner, cfg.d_state, cfg.nheads
        self.norm = nn.RMSNorm(cfg.d_model, eps=1e-5)
        self.in_proj = nn.Linear(cfg.d_model, 2 * d_in + 2 * n + H, bias=False)
        self.conv_w = nn.Parameter(torch.empty(cfg.conv_dim, cfg.d_conv))
        self.conv_b = nn.Parameter(torch.zeros(cfg.conv_dim))
        # dt in [1e-3, 1e-1] (log-uniform), decay rates A in [1, 16]: Mamba-2's initialisation
        dt = torch.exp(torch.rand(H) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1.0, 16.0)))
        self.D = nn.Parameter(torch.ones(H))
        self.out_norm = nn.RMSNorm(d_in, eps=1e-5)
        self.out_proj = nn.Linear(d_in, cfg.d_model, bias=False)
        nn.init.uniform_(self.conv_w, -1.0 / math.sqrt(cfg.d_conv), 1.0 / math.sqrt(cfg.d_conv))

    def _split(self, proj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.cfg
        z, xbc, dt = torch.split(proj, [c.d_inner, c.conv_dim, c.nheads], dim=-1)
        return z, xbc, dt

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u [b, l, d_model] from zero state -> [b, l, d_model]."""
        c = self.cfg
        b, l, _ = u.shape
        z, xbc, dt = self._split(self.in_proj(self.norm(u)))
        xbc = F.conv1d(F.pad(xbc.transpose(1, 2), (c.d_conv - 1, 0)), self.conv_w[:, None, :], self.conv_b,
                       groups=c.conv_dim)
        xbc = F.silu(xbc.transpose(1, 2))  # [b, l, conv_dim]
        x, Bm, Cm = torch.split(xbc, [c.d_inner, c.d_state, c.d_state], dim=-1)
        x = x.reshape(b, l, c.nheads, c.headdim)
        dt = F.softplus(dt + self.dt_bias)  # [b, l, h]
        y, _ = ssd_scan(x, dt, -torch.exp(self.A_log), Bm, Cm, c.chunk)
        y = y + self.D[:, None] * x
        y = y.reshape(b, l, c.d_inner) * F.silu(z)
        return u + self.out_proj(self.out_norm(y))

    def step(
        self,
        u: torch.Tensor,  # [B, d_model]
        conv_state: torch.Tensor,  # [slots, layers, d_conv-1, conv_dim] updated in place
        ssm_state: torch.Tensor,  # [slots, layers, nheads, headdim, d_state] updated in place
        slots: torch.Tensor,  # [B] int64
        layer: int,
    ) -> torch.Tensor:
        z, xbc, dt = self._split(self.in_proj(self.norm(u)))
        y = ssm_step(xbc, dt, z, conv_state, ssm_state, slots, layer,
                     self.conv_w, self.conv_b, self.dt_bias, self.A_log, self.D)
        return u + self.out_proj(self.out_norm(y))

    def step_chunk(
        self,
        u: torch.Tensor,  # [B, K, d_model]: K consecutive frames
        conv_state: torch.Tensor,  # [slots, layers, d_conv-1, conv_dim] updated in place
        ssm_state: torch.Tensor,  # [slots, layers, nheads, headdim, d_state] updated in place
        slots: torch.Tensor,  # [B] int64
        layer: int,
    ) -> torch.Tensor:
        """K frames of ``step`` at once. The projections see no recurrence, so they run over all
        B*K rows in one matmul each; only the state update walks the K frames in order."""
        proj = self.in_proj(self.norm(u))  # [B, K, P] packed z | xBC | dt
        y = ssm_step_chunk_packed(proj, conv_state, ssm_state, slots, layer,
                                  self.conv_w, self.conv_b, self.dt_bias, self.A_log, self.D)  # [B, K, d_inner]
        return u + self.out_proj(self.out_norm(y))


class SSMDecoder(nn.Module):
    """Stack of SSM blocks + a head predicting the normalized vocoder features."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(SSMBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=1e-5)
        self.head = nn.Linear(cfg.d_model, cfg.n_features)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """cond [b, l, d_model] -> normalized features [b, l, n_features] (vuv as a logit)."""
        u = cond
        for block in self.blocks:
            u = block(u)
        return self.head(self.norm(u))

    def step(self, cond: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
             slots: torch.Tensor) -> torch.Tensor:
        """cond [B, d_model] one frame -> [B, n_features]; states updated in place at ``slots``."""
        u = cond
        for i, block in enumerate(self.blocks):
            assert isinstance(block, SSMBlock)
            u = block.step(u, conv_state, ssm_state, slots, i)
        return self.head(self.norm(u))

    def step_chunk(self, cond: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
                   slots: torch.Tensor) -> torch.Tensor:
        """cond [B, K, d_model] K frames -> [B, K, n_features]; the same as K calls of ``step``."""
        u = cond
        for i, block in enumerate(self.blocks):
            assert isinstance(block, SSMBlock)
            u = block.step_chunk(u, conv_state, ssm_state, slots, i)
        return self.head(self.norm(u))
