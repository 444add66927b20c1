"""Rendering lines in-process, as `npc-voice say` does: one engine of our own, not paced to real time.

Used by the CLI (`npc-voice say` without --server) and by evaluation (`npc-voice eval` renders every
character this way), so both hear exactly the same thing.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from npc_voice.config import Config
from npc_voice.frontend import text_to_phonemes
from npc_voice.model import SSMVoice


def render_text(voice: SSMVoice, text: str, controls: Sequence[float] | None = None, *, speed: float = 1.0,
                lexicon: Mapping[str, str] | None = None) -> np.ndarray:
    """Text -> PCM float32 at the voice's rate, straight through one voice on a private state:
    the frontend here, then ``prepare`` and ``render_prepared`` (the model never sees text)."""
    return voice.render_prepared(voice.prepare(text_to_phonemes(text, lexicon), speed=speed), controls)


def render_local(config: Config, character_id: str, lines: list[str], *, rate: int = 0, device: str = "cpu",
                 voice: Any = None, style: str = "") -> Iterator[tuple[int, np.ndarray, int]]:
    """(index, PCM float32, rate) per line, in order: the character's voice and controls through an
    engine of our own. ``voice`` replaces the configured voice object (evaluating another checkpoint);
    ``style`` is the per-request style override ("" = the character's)."""
    from npc_voice.engine import AudioEvent, Engine, EngineConfig
    from npc_voice.server.convert import resolve_controls
    from npc_voice.server.voices import build_voice
    from npc_voice.v1 import npc_voice_pb2 as pb

    character, spec = config.resolve(character_id)
    rate = rate or spec.sample_rate
    model = voice if voice is not None else build_voice(config.voices[spec.voice], device)
    window = min(len(lines), 16)
    # lookahead 1e9 ms: nothing to play back here, so generate as fast as the device allows.
    engine = Engine(
        {spec.voice: model},
        EngineConfig(slots=window + 1, device=device, lookahead_ms=1e9, max_queue_wait_s=600.0),
    )
    engine.start()
    controls = resolve_controls(spec, pb.VoiceOverrides(style=style) if style else pb.VoiceOverrides())
    try:
        for lo in range(0, len(lines), window):
            streams = []
            for i in range(lo, min(lo + window, len(lines))):
                # With several lines every line gets a fresh instance state ("guard/say-003"): barks
                # rendered for shipping must not depend on which line came before.
                cid = character if len(lines) == 1 else f"{spec.name}/say-{i:03d}"
                stream = engine.open_stream(cid, spec.voice, controls, spec.lexicon, rate, f"say-{i}")
                stream.say(lines[i])
                stream.end_input()
                streams.append((i, stream))
            for i, stream in streams:
                parts = [ev.pcm for ev in stream.events_sync() if isinstance(ev, AudioEvent)]
                yield i, (np.concatenate(parts) if parts else np.zeros(0, np.float32)), rate
    finally:
        engine.close()
