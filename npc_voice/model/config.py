"""Hyperparameters of the voice model (frozen; stored in every checkpoint)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

FEATURE_DIM = 68  # vocoder parameters per frame (npc_voice.audio.features layout)


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of the encoder, duration predictor, frame conditioner and SSM decoder.

    The defaults are the shipped voice: small enough to train in about an hour on a
    2-core CPU and to step 64 streams in a few ms, with ~80 KB of state per stream.
    """

    n_symbols: int = 160  # rows of the symbol embedding (>= len(symbols))
    d_enc: int = 128  # symbol encoder width
    enc_conv_layers: int = 3  # non-causal conv blocks over symbols
    enc_attn_layers: int = 1  # transformer layers over symbols (line-level prosody: questions, lists)
    enc_heads: int = 2
    enc_kernel: int = 5
    dur_kernel: int = 3
    frame_conv_layers: int = 2  # non-causal conv blocks over frames inside prepare (coarticulation)
    frame_kernel: int = 5
    dropout: float = 0.1  # encoder only; the decoder has none
    d_model: int = 128  # decoder width == d_cond (PreparedLine.cond width)
    n_layers: int = 4  # SSM decoder blocks
    expand: int = 2  # d_inner = expand * d_model
    headdim: int = 32
    d_state: int = 16  # small on purpose: per-stream bytes decide GPU capacity
    d_conv: int = 4
    chunk: int = 16  # chunk length of the parallel scan (training/prefill only; 16 measured fastest on CPU)
    n_features: int = FEATURE_DIM

    def __post_init__(self) -> None:
        if self.d_inner % self.headdim:
            raise ValueError(f"d_inner={self.d_inner} (expand*d_model) is not a multiple of headdim={self.headdim}")
        if self.d_enc % self.enc_heads:
            raise ValueError(f"d_enc={self.d_enc} is not a multiple of enc_heads={self.enc_heads}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and value < 0:
                raise ValueError(f"ModelConfig.{f.name}={value} must be >= 0")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.d_state

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model hyperparameters {unknown}")
        return cls(**data)

    @classmethod
    def tiny(cls) -> ModelConfig:
        """For tests: a few thousand parameters, fast on CPU."""
        return cls(
            d_enc=32, enc_conv_layers=1, enc_attn_layers=1, enc_heads=2, frame_conv_layers=1,
            d_model=32, n_layers=2, expand=2, headdim=16, d_state=8, chunk=16,
        )
