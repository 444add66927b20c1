"""Voice checkpoints: a directory with ``model.safetensors`` (weights) and ``config.json``.

config.json holds the format version, the voice name, the hyperparameters, the symbol
inventory, the feature normalisation, the sha256 of the weights file and the voice's
version id (a hash over all of it; exported character states name it). Loading checks
every one of these and says which file is wrong.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from npc_voice.model.config import ModelConfig
from npc_voice.model.net import VoiceNet

log = logging.getLogger(__name__)

FORMAT = "npc-voice-ssm"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(ValueError):
    """A voice directory that cannot be loaded; the message names the file and the problem."""


@dataclass(frozen=True)
class VoiceMeta:
    name: str  # voice name
    version: str  # 16 hex digits identifying weights + config
    symbols: tuple[str, ...]  # symbol inventory; index = embedding row (0 = padding)
    config: ModelConfig
    training: dict[str, Any] = field(default_factory=dict)  # free-form provenance (steps, data, time)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _version(weights_sha: str, body: dict[str, Any]) -> str:
    core = {k: body[k] for k in ("format", "format_version", "name", "model", "symbols", "feat_mean", "feat_std")}
    text = weights_sha + json.dumps(core, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_voice(directory: str | Path, net: VoiceNet, symbols: tuple[str, ...], name: str,
               training: dict[str, Any] | None = None, dtype: torch.dtype = torch.float16) -> VoiceMeta:
    """Write ``net`` (weights + normalisation) and metadata to ``directory``; returns its metadata.

    Weights are stored as float16 by default (half the size; loaded back as float32)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(weights), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    body: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "model": net.cfg.to_dict(),
        "symbols": list(symbols),
        "feat_mean": [round(float(x), 6) for x in net.feat_mean.cpu()],
        "feat_std": [round(float(x), 6) for x in net.feat_std.cpu()],
        "training": training or {},
    }
    body["weights_sha256"] = _sha256(weights)
    body["version"] = _version(body["weights_sha256"], body)
    (out / CONFIG).write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return VoiceMeta(name, body["version"], tuple(symbols), net.cfg, body["training"])


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: missing (a voice directory needs {CONFIG} and {WEIGHTS})") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an npc-voice checkpoint (format {body.get('format')!r}, "
                              f"expected {FORMAT!r})" if isinstance(body, dict) else f"{path}: not a JSON object")
    if body.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {body.get('format_version')!r} is not supported "
                              f"(this npc-voice reads version {FORMAT_VERSION})")
    return body


def load_voice_net(directory: str | Path, device: str | torch.device = "cpu") -> tuple[VoiceNet, VoiceMeta]:
    """Load and verify a voice directory; the network is returned in eval mode on ``device``."""
    directory = Path(directory)
    path = directory / CONFIG
    body = read_meta(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        cfg = ModelConfig.from_dict(body["model"])
        symbols = tuple(body["symbols"])
        mean = torch.tensor(body["feat_mean"], dtype=torch.float32)
        std = torch.tensor(body["feat_std"], dtype=torch.float32)
        expected_sha, version, name = body["weights_sha256"], body["version"], body["name"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad or missing field ({e!r})") from e
    if mean.shape != (cfg.n_features,) or std.shape != (cfg.n_features,):
        raise CheckpointError(f"{path}: feat_mean/feat_std must have {cfg.n_features} values")
    if len(symbols) > cfg.n_symbols:
        raise CheckpointError(f"{path}: {len(symbols)} symbols but the model has n_symbols={cfg.n_symbols}")
    actual_sha = _sha256(weights)
    if actual_sha != expected_sha:
        raise CheckpointError(f"{weights}: sha256 {actual_sha[:12]}… does not match {CONFIG} "
                              f"({str(expected_sha)[:12]}…): the file is corrupt, truncated or from another voice")
    if _version(actual_sha, body) != version:
        raise CheckpointError(f"{path}: version id {version!r} does not match its contents (edited by hand?)")
    try:
        tensors = {k: v.float() for k, v in load_file(str(weights)).items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: cannot be read as safetensors ({e})") from e
    net = VoiceNet(cfg)
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: weights do not fit the hyperparameters in {CONFIG}: {e}") from e
    net.set_stats(mean, std)
    net.eval().to(device)
    log.info("loaded voice %r version %s from %s", name, version, directory)
    return net, VoiceMeta(name, version, symbols, cfg, dict(body.get("training", {})))
