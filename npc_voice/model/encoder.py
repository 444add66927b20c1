"""Line-level half of the model: symbols -> encodings -> durations -> frame conditioning.

Runs once per line (non-causal, parallel). Everything here works on padded batches
with a boolean mask so that a line gives the same result alone or in a batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from npc_voice.model.config import ModelConfig

N_POS = 4  # within-symbol position features per frame (see position_features)


class ConvBlock(nn.Module):
    """Pre-norm residual 1-D conv over time; padding rows are zeroed before every conv."""

    def __init__(self, d: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, kernel, padding=dilation * (kernel // 2), dilation=dilation)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [b, t, d], mask [b, t] (True = real)."""
        h = conv_over_time(self.norm(x) * mask[..., None], self.conv)
        return (x + self.drop(F.gelu(h))) * mask[..., None]


def conv_over_time(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv`` over the time axis of x [b, t, d] -> [b, t, out]: the same sums as ``conv`` on
    x.transpose(1, 2), as one matrix product over each frame's window of inputs (stride 1).

    Why: for a short input at batch 1 (a bark is ~120 frames) torch's CPU convolution takes its
    native path instead of oneDNN: the 128 -> 128, kernel 5, dilation 3 frame conv over 155 frames
    took 1.11 ms, 0.41 ms as windows @ weight (one thread). A whole line's preparation (on the
    path to its first audio): 7-11 % less alone, 1-7 % in batches of 4-8 (``bench/prepare_batch.py
    --against-native-conv``)."""
    assert conv.stride == (1,) and conv.groups == 1 and isinstance(conv.padding, tuple), "a stride-1 dense conv"
    k, dil, pad = conv.kernel_size[0], conv.dilation[0], conv.padding[0]
    windows = F.pad(x, (0, 0, pad, pad)).unfold(1, (k - 1) * dil + 1, 1)[..., ::dil]  # [b, t, d, k]
    return F.linear(windows.reshape(*windows.shape[:2], -1), conv.weight.reshape(conv.out_channels, -1), conv.bias)


class SymbolEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_enc
        self.embed = nn.Embedding(cfg.n_symbols, d)
        self.convs = nn.ModuleList(ConvBlock(d, cfg.enc_kernel, 1, cfg.dropout) for _ in range(cfg.enc_conv_layers))
        self.attn = nn.ModuleList(
            nn.TransformerEncoderLayer(d, cfg.enc_heads, 4 * d, cfg.dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(cfg.enc_attn_layers)
        )
        self.norm = nn.LayerNorm(d)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids [b, s] int64, mask [b, s] -> [b, s, d_enc] (zero at padding)."""
        x = self.embed(ids) * mask[..., None]
        for conv in self.convs:
            x = conv(x, mask)
        for layer in self.attn:
            # fast path off: it returns nested tensors / differs numerically between batch shapes
            x = layer(x, src_key_padding_mask=~mask, is_causal=False) * mask[..., None]
        return self.norm(x) * mask[..., None]


class DurationPredictor(nn.Module):
    """log(1 + frames) per symbol."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_enc
        self.convs = nn.ModuleList(ConvBlock(d, cfg.dur_kernel, 1, cfg.dropout) for _ in range(2))
        self.out = nn.Linear(d, 1)
        nn.init.constant_(self.out.bias, 1.8)  # ~5 frames per symbol before training

    def forward(self, enc: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = enc
        for conv in self.convs:
            x = conv(x, mask)
        return self.out(x).squeeze(-1) * mask  # [b, s]


def durations_from_log(log_dur: torch.Tensor, mask: torch.Tensor, speed: float) -> torch.Tensor:
    """Predicted log(1+frames) [s] -> int frames [s], rounded on the cumulative sum so
    rounding errors do not pile up over a long line."""
    frames = torch.clamp(torch.expm1(log_dur.float()), min=0.0) / speed * mask
    ends = torch.round(torch.cumsum(frames, dim=-1))
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    return (ends - starts).long()


def position_features(durations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """durations [s] int -> (symbol index per frame [t], position features [t, N_POS])."""
    idx = torch.repeat_interleave(torch.arange(durations.shape[0], device=durations.device), durations)
    d = durations[idx].float()
    starts = torch.cumsum(durations, 0) - durations
    j = torch.arange(idx.shape[0], device=durations.device) - starts[idx]  # frame within its symbol
    frac = (j.float() + 0.5) / d
    pos = torch.stack([frac, torch.log1p(d) / 4.0, torch.clamp(j.float(), max=20) / 20.0,
                       torch.clamp(d - 1 - j.float(), max=20) / 20.0], dim=-1)
    return idx, pos


class FrameConditioner(nn.Module):
    """Length regulation + non-causal frame convs -> cond [t, d_model].

    Each frame sees its symbol, the previous and the next symbol (coarticulation)
    and where it sits inside its symbol."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_enc
        self.cur = nn.Linear(d, d)
        self.prev = nn.Linear(d, d, bias=False)
        self.next = nn.Linear(d, d, bias=False)
        self.pos = nn.Linear(N_POS, d)
        self.convs = nn.ModuleList(
            ConvBlock(d, cfg.frame_kernel, 1 + 2 * i, 0.0) for i in range(cfg.frame_conv_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.d_model)

    def forward(self, enc: torch.Tensor, sym_mask: torch.Tensor, durations: list[torch.Tensor]) -> tuple[
            torch.Tensor, torch.Tensor]:
        """enc [b, s, d_enc]; durations: per line int [s_i] -> (cond [b, t_max, d_model], frame mask [b, t_max])."""
        prev = F.pad(enc[:, :-1], (0, 0, 1, 0))
        nxt = F.pad(enc[:, 1:], (0, 0, 0, 1))
        sym = self.cur(enc) + self.prev(prev) + self.next(nxt)  # [b, s, d]
        t_max = max(1, max(int(d.sum()) for d in durations))
        x = enc.new_zeros(enc.shape[0], t_max, enc.shape[-1])
        mask = torch.zeros(enc.shape[0], t_max, dtype=torch.bool, device=enc.device)
        for i, dur in enumerate(durations):
            idx, pos = position_features(dur)
            t = idx.shape[0]
            x[i, :t] = sym[i, idx] + self.pos(pos)
            mask[i, :t] = True
        x = x * mask[..., None]
        for conv in self.convs:
            x = conv(x, mask)
        return self.out(self.norm(x)) * mask[..., None], mask
