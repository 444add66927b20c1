"""Naturalness predicted by DNSMOS (Microsoft's P.835 SIG/BAK/OVRL and P.808 MOS predictors).

The ONNX models ship inside the ``speechmos`` package (PyPI), so scoring runs offline on CPU
(~0.3 s per line on one thread). Each clip is resampled to 16 kHz and peak-normalised first (DNSMOS
depends on level; peak 1 is how every system here is scored). Clips shorter than 9 s are looped to
9 s by speechmos itself.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np

from npc_voice.audio import features as F

MOS_KEYS = ("sig", "bak", "ovrl", "p808")  # report names; speechmos calls them sig_mos, ... p808_mos
EXTRA_HINT = "pip install -e '.[eval]'"


class DnsMos:
    """Callable: audio (float in [-1, 1] or int16, 22050 Hz) -> {"sig", "bak", "ovrl", "p808"}."""

    def __init__(self, threads: int = 1) -> None:
        try:
            ort = importlib.import_module("onnxruntime")
            dnsmos = importlib.import_module("speechmos.dnsmos")
        except ImportError as e:
            raise SystemExit(f"DNSMOS needs speechmos, onnxruntime and librosa: {EXTRA_HINT} ({e})") from e
        models = os.path.join(os.path.dirname(str(dnsmos.__file__)), "dnsmos_models")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # speechmos's own run() takes every core
        opts.inter_op_num_threads = 1
        scorer = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)  # its __init__ builds sessions with default options
        scorer.primary_model_path = os.path.join(models, "sig_bak_ovr.onnx")
        scorer.onnx_sess = ort.InferenceSession(scorer.primary_model_path, opts)
        scorer.p808_onnx_sess = ort.InferenceSession(os.path.join(models, "model_v8.onnx"), opts)
        self._scorer: Any = scorer

    def __call__(self, audio: np.ndarray) -> dict[str, float]:
        from npc_voice.audio.resample import resample

        x = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
        x16 = resample(x, F.SAMPLE_RATE, 16000).astype(np.float32)
        peak = float(np.abs(x16).max()) if len(x16) else 0.0
        if peak <= 0.0:
            return {k: float("nan") for k in MOS_KEYS}
        out = self._scorer(np.clip(x16 / peak, -1.0, 1.0), 16000, False)
        return {k: float(out[f"{k}_mos"]) for k in MOS_KEYS}
