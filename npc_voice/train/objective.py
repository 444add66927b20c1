"""Training objective and validation metrics.

The decoder is trained on *packed* rows: the frames of several whole lines (conditioning
computed per line, as ``prepare`` does) are concatenated and cut into rows of
``seq_frames``, so the SSM state flows from one line into the next exactly as it does for
a character that keeps talking.

Loss parts (features normalised per dimension; vuv is a logit):
  f0      L1 on log f0, voiced frames weighted more (interpolated unvoiced f0 matters less)
  vuv     binary cross-entropy
  env     L1 on the envelope + L1 on its frame-to-frame change (sharper transitions than
          plain L1-to-mean) + L1 on its band-to-band change (keeps formant peaks)
  ap      L1 on aperiodicity
  dur     MSE on log(1 + frames) per symbol
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from npc_voice.audio.features import AP, ENV, LF0, VUV
from npc_voice.model.net import VoiceNet
from npc_voice.train.dataset import Batch, Utterance, collate

WEIGHTS = {"f0": 2.0, "vuv": 0.5, "env": 1.0, "env_dt": 0.5, "env_df": 0.5, "ap": 0.5, "dur": 1.0}


def _pack(cond: torch.Tensor, fmask: torch.Tensor, feats: torch.Tensor, rows: int, seq: int,
          offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate all lines' frames and cut ``rows`` rows of ``seq`` frames from ``offset``."""
    flat = cond[fmask]  # [N, d] line after line
    n = rows * seq
    return flat[offset: offset + n].reshape(rows, seq, -1), feats[offset: offset + n].reshape(rows, seq, -1)


def loss_parts(net: VoiceNet, batch: Batch, rows: int, seq: int, offset: int) -> dict[str, torch.Tensor]:
    """Weighted loss parts of one packed batch; ``total`` is their sum."""
    enc, log_dur = net.encode(batch.ids, batch.mask)
    cond, fmask = net.conditioner(enc, batch.mask, batch.durations)
    x, feats = _pack(cond, fmask, batch.feats, rows, seq, offset)
    pred = net.decoder(x)  # [rows, seq, 68]
    parts = feature_losses(net, pred, feats)
    target_dur = torch.zeros_like(log_dur)
    for i, d in enumerate(batch.durations):
        target_dur[i, : d.shape[0]] = torch.log1p(d.float())
    m = batch.mask.float()
    parts["dur"] = ((log_dur - target_dur) ** 2 * m).sum() / m.sum()
    parts["total"] = torch.stack([WEIGHTS[k] * v for k, v in parts.items()]).sum()
    return parts


def feature_losses(net: VoiceNet, pred: torch.Tensor, feats: torch.Tensor) -> dict[str, torch.Tensor]:
    tgt = net.normalize(feats)
    voiced = feats[..., VUV]
    w_f0 = 0.3 + 0.7 * voiced
    env_p, env_t = pred[..., ENV], tgt[..., ENV]
    # band-to-band change in physical units (log amplitude), scaled by the mean envelope std
    scale = net.feat_std[ENV].mean()
    phys_p = (env_p * net.feat_std[ENV] + net.feat_mean[ENV]) / scale
    phys_t = feats[..., ENV] / scale
    return {
        "f0": ((pred[..., LF0] - tgt[..., LF0]).abs() * w_f0).sum() / w_f0.sum(),
        "vuv": F.binary_cross_entropy_with_logits(pred[..., VUV], voiced),
        "env": (env_p - env_t).abs().mean(),
        "env_dt": ((env_p[:, 1:] - env_p[:, :-1]) - (env_t[:, 1:] - env_t[:, :-1])).abs().mean(),
        "env_df": ((phys_p[..., 1:] - phys_p[..., :-1]) - (phys_t[..., 1:] - phys_t[..., :-1])).abs().mean(),
        "ap": (pred[..., AP] - tgt[..., AP]).abs().mean(),
    }


@torch.no_grad()
def validate(net: VoiceNet, utts: list[Utterance], device: torch.device, max_utts: int = 64) -> dict[str, float]:
    """Teacher-forced durations, one line at a time from zero state (as ``prepare`` + scan would).

    Returns the loss parts plus physical errors: f0 RMSE in cents on frames voiced in both,
    voicing error %, envelope mean absolute error in dB, duration MAE in frames per symbol."""
    was_training = net.training
    net.eval()
    sums: dict[str, float] = {}
    f0_sq, f0_n, vuv_err, env_db, frames, dur_abs, syms = 0.0, 0, 0, 0.0, 0, 0.0, 0
    for utt in utts[:max_utts]:
        b = collate([utt], device)
        enc, log_dur = net.encode(b.ids, b.mask)
        cond, _ = net.conditioner(enc, b.mask, b.durations)
        pred = net.decoder(cond)
        parts = feature_losses(net, pred, b.feats[None])
        parts["dur"] = ((log_dur[0] - torch.log1p(b.durations[0].float())) ** 2).mean()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        params = net.denormalize(pred)[0]
        t = b.feats
        pv, tv = params[:, VUV] > 0.5, t[:, VUV] > 0.5
        both = pv & tv
        cents = 1200.0 / math.log(2.0) * (params[:, LF0] - t[:, LF0])
        f0_sq += float((cents[both] ** 2).sum())
        f0_n += int(both.sum())
        vuv_err += int((pv != tv).sum())
        env_db += float((params[:, ENV] - t[:, ENV]).abs().mean(-1).sum()) * 20.0 / math.log(10.0)
        frames += t.shape[0]
        pred_frames = torch.clamp(torch.expm1(log_dur[0]), min=0)
        dur_abs += float((pred_frames - b.durations[0].float()).abs().sum())
        syms += int(b.durations[0].shape[0])
    n = max(1, min(len(utts), max_utts))
    out = {f"val_{k}": v / n for k, v in sums.items()}
    out["val_total"] = sum(WEIGHTS[k] * out[f"val_{k}"] for k in sums)
    out.update({
        "f0_rmse_cents": math.sqrt(f0_sq / max(1, f0_n)),
        "vuv_error_pct": 100.0 * vuv_err / max(1, frames),
        "env_mae_db": env_db / max(1, frames),
        "dur_mae_frames": dur_abs / max(1, syms),
    })
    net.train(was_training)
    return out


def offset_for(batch: Batch, rows: int, seq: int, rng: np.random.Generator) -> int:
    """Random start of the packed rows inside the concatenated frames."""
    spare = int(batch.feats.shape[0]) - rows * seq
    if spare < 0:
        raise ValueError(f"batch has {int(batch.feats.shape[0])} frames, fewer than rows*seq = {rows * seq}")
    return int(rng.integers(0, spare + 1))
