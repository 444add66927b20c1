"""Engine: the state pool, the scheduler thread and the streams (stub; implementation in progress)."""
from __future__ import annotations

from collections.abc import Mapping

from npc_voice.engine.api import EngineConfig, EngineStats, LineRequest, VoiceControls
from npc_voice.engine.stream import Stream
from npc_voice.model.api import VoiceModel


class Engine:
    def __init__(self, voices: Mapping[str, VoiceModel], config: EngineConfig) -> None:
        self.voices = dict(voices)
        self.config = config

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def open_stream(
        self,
        character: str,
        voice: str,
        controls: VoiceControls,
        lexicon: Mapping[str, str],
        sample_rate: int,
        request_id: str,
    ) -> Stream:
        raise NotImplementedError

    def speak(self, req: LineRequest) -> Stream:
        raise NotImplementedError

    def cancel_character(self, character: str, request_id: str = "") -> tuple[bool, int]:
        raise NotImplementedError

    def reset_character(self, character: str) -> None:
        raise NotImplementedError

    def export_character(self, character: str) -> bytes:
        raise NotImplementedError

    def import_character(self, character: str, data: bytes) -> None:
        raise NotImplementedError

    def stats(self) -> EngineStats:
        raise NotImplementedError
