"""The voice model: encoder, duration predictor, SSM decoder, checkpoints.

    voice = load_voice()            # the shipped default voice (npc_voice/voices/default/)
    voice = tiny_voice(seed=0)      # random tiny model for tests
    line = voice.prepare(phonemes)  # a PhonemeInput from npc_voice.frontend.text_to_phonemes
    pcm = voice.render_prepared(line)  # (text -> PCM in one call: npc_voice.say.render_text)
"""
from __future__ import annotations

from pathlib import Path

import torch

from npc_voice.contracts import PHONEME_SYMBOLS
from npc_voice.model.api import VoiceModel
from npc_voice.model.checkpoint import CheckpointError, load_voice_net
from npc_voice.model.config import ModelConfig
from npc_voice.model.net import VoiceNet
from npc_voice.model.voice import SSMVoice

DEFAULT_VOICE_DIR = Path(__file__).resolve().parent.parent / "voices" / "default"


def plausible_stats(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature normalisation for an untrained voice: speech-like f0/envelope/aperiodicity ranges."""
    mean = torch.zeros(cfg.n_features)
    std = torch.ones(cfg.n_features)
    mean[0], std[0] = 4.8, 0.2  # lf0: ~120 Hz
    mean[2:62], std[2:62] = -6.0, 2.0  # log envelope
    mean[62:68], std[62:68] = -20.0, 10.0  # aperiodicity dB
    return mean, std


def random_voice(cfg: ModelConfig, symbols: tuple[str, ...] | None = None, *, seed: int = 0,
                 name: str = "random", device: str | torch.device = "cpu") -> SSMVoice:
    """An untrained voice (deterministic for ``seed``); ``symbols`` default: the frontend's inventory."""
    symbols = PHONEME_SYMBOLS if symbols is None else symbols
    if cfg.n_symbols < len(symbols):
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "n_symbols": len(symbols)})
    torch.manual_seed(seed)
    net = VoiceNet(cfg)
    net.set_stats(*plausible_stats(cfg))
    return SSMVoice(net, symbols, name=name, version=f"random-{seed}", device=device)


def tiny_voice(seed: int = 0) -> SSMVoice:
    """A tiny random-init voice on CPU: fast, deterministic, for tests of everything above the model."""
    return random_voice(ModelConfig.tiny(), seed=seed, name="tiny", device="cpu")


def load_voice(path: str | Path | None = None, device: str | torch.device = "cpu") -> SSMVoice:
    """Load a voice directory (model.safetensors + config.json); None = the shipped default."""
    directory = DEFAULT_VOICE_DIR if path is None else Path(path)
    net, meta = load_voice_net(directory, device)
    return SSMVoice(net, meta.symbols, name=meta.name, version=meta.version, device=device)


__all__ = [
    "DEFAULT_VOICE_DIR", "CheckpointError", "ModelConfig", "SSMVoice", "VoiceModel", "VoiceNet",
    "load_voice", "random_voice", "tiny_voice",
]
