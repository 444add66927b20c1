"""Turning ``voices:`` entries of the configuration into loaded VoiceModels."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

from npc_voice.config import VoiceSpec
from npc_voice.model.api import VoiceModel

log = logging.getLogger(__name__)


def build_voice(spec: VoiceSpec, device: str) -> VoiceModel:
    """Load one voice: the shipped default, a checkpoint directory, or a tiny random test voice."""
    import npc_voice.model as model

    t0 = time.perf_counter()
    if spec.kind == "tiny":
        voice: VoiceModel = model.tiny_voice(spec.seed)  # type: ignore[attr-defined]
    elif spec.kind == "default":
        voice = model.load_voice(None, device=device)  # type: ignore[attr-defined]
    else:
        voice = model.load_voice(spec.path, device=device)  # type: ignore[attr-defined]
    log.info("voice %r (%s) loaded in %.2f s", spec.name, spec.kind, time.perf_counter() - t0)
    return voice


def build_voices(
    specs: Iterable[VoiceSpec], device: str, have: Mapping[str, VoiceModel] | None = None
) -> dict[str, VoiceModel]:
    """Load every spec not already in ``have`` (same name and same spec are reused by the caller)."""
    return {s.name: build_voice(s, device) for s in specs if not have or s.name not in have}


def parameter_count(voice: VoiceModel) -> int:
    """Parameters of a voice, when it can tell (SSMVoice.param_count); 0 otherwise."""
    count = getattr(voice, "param_count", None)
    return int(count()) if callable(count) else 0


def checkpoint_of(spec: VoiceSpec) -> str:
    """Where a voice comes from, for ListVoices: a directory, or "tiny:SEED" for test voices."""
    if spec.kind == "tiny":
        return f"tiny:{spec.seed}"
    if spec.kind == "default":
        import npc_voice.model as model

        return str(model.DEFAULT_VOICE_DIR)
    return spec.path or ""
