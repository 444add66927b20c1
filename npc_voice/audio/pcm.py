"""PCM encoding of float audio for the wire: ``s16le`` (int16 little-endian) or ``f32le`` (float32 LE)."""
from __future__ import annotations

import numpy as np
import torch

ENCODINGS = ("s16le", "f32le")
BYTES_PER_SAMPLE = {"s16le": 2, "f32le": 4}


def encode_pcm(audio: np.ndarray | torch.Tensor, encoding: str = "s16le") -> bytes:
    """float samples (nominally [-1, 1]) -> bytes. Values are clipped to [-1, 1]; NaN becomes 0.

    s16le scales by 32767 and rounds to nearest, so -1.0, 0.0 and 1.0 map to -32767, 0 and 32767."""
    x = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    x = np.clip(x.astype(np.float32, copy=False).ravel(), -1.0, 1.0)  # (NaN passes clip: zeroed next)
    nan = np.isnan(x)
    if nan.any():  # np.nan_to_num costs ~10x more in Python-level checks; this runs per audio chunk
        x = np.where(nan, np.float32(0.0), x)
    if encoding == "s16le":
        return np.rint(x * 32767.0).astype("<i2").tobytes()
    if encoding == "f32le":
        return x.astype("<f4").tobytes()
    raise ValueError(f"unknown PCM encoding {encoding!r}; expected one of {ENCODINGS}")


def decode_pcm(data: bytes, encoding: str = "s16le") -> np.ndarray:
    """bytes -> float32 samples in [-1, 1] (the inverse of ``encode_pcm``, for clients and tests)."""
    if encoding == "s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0
    if encoding == "f32le":
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    raise ValueError(f"unknown PCM encoding {encoding!r}; expected one of {ENCODINGS}")
