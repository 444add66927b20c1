"""The trainable network: symbol encoder + duration predictor + frame conditioner + SSM decoder.

``VoiceNet`` holds only weights and the feature normalisation; ``npc_voice.model.voice``
wraps it with the streaming API and the vocoder.
"""
from __future__ import annotations

import torch
from torch import nn

from npc_voice.model.config import ModelConfig
from npc_voice.model.encoder import DurationPredictor, FrameConditioner, SymbolEncoder
from npc_voice.model.ssm import SSMDecoder

VUV = 1  # feature column of the voicing flag (predicted as a logit, never normalised)


class VoiceNet(nn.Module):
    feat_mean: torch.Tensor  # [n_features] buffers, set from the checkpoint (not in state_dict)
    feat_std: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SymbolEncoder(cfg)
        self.duration = DurationPredictor(cfg)
        self.conditioner = FrameConditioner(cfg)
        self.decoder = SSMDecoder(cfg)
        # not in state_dict: stored in the checkpoint's JSON
        self.register_buffer("feat_mean", torch.zeros(cfg.n_features), persistent=False)
        self.register_buffer("feat_std", torch.ones(cfg.n_features), persistent=False)

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        mean, std = mean.clone().float(), std.clone().float()
        mean[VUV], std[VUV] = 0.0, 1.0
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std)

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.feat_mean) / self.feat_std

    def denormalize(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output -> vocoder parameters (vuv as a probability)."""
        params = out * self.feat_std + self.feat_mean
        return torch.cat([params[..., :VUV], torch.sigmoid(out[..., VUV:VUV + 1]), params[..., VUV + 1:]], dim=-1)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids/mask [b, s] -> (encodings [b, s, d_enc], predicted log(1+frames) [b, s])."""
        enc = self.encoder(ids, mask)
        return enc, self.duration(enc, mask)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, durations: list[torch.Tensor]) -> tuple[
            torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass over whole lines from zero decoder state.

        Returns (normalized feature prediction [b, t, F], frame mask [b, t], log-duration prediction [b, s])."""
        enc, log_dur = self.encode(ids, mask)
        cond, fmask = self.conditioner(enc, mask, durations)
        return self.decoder(cond), fmask, log_dur
