"""npc-voice engine: state pool, scheduler thread, streams. Public names live in ``api``."""
from npc_voice.engine.api import (
    SAMPLE_RATES,
    STATE_FORMAT_VERSION,
    AudioEvent,
    BusyError,
    BusyPolicy,
    CapacityError,
    EndEvent,
    EngineConfig,
    EngineError,
    EngineStats,
    EngineUnavailableError,
    LineRequest,
    MarkEvent,
    StateFormatError,
    StepError,
    UnknownVoiceError,
    VoiceControls,
)
from npc_voice.engine.device import resolve_device
from npc_voice.engine.engine import Engine, EngineService
from npc_voice.engine.stream import Stream

__all__ = [
    "SAMPLE_RATES",
    "STATE_FORMAT_VERSION",
    "AudioEvent",
    "BusyError",
    "BusyPolicy",
    "CapacityError",
    "EndEvent",
    "Engine",
    "EngineService",
    "EngineConfig",
    "EngineError",
    "EngineStats",
    "EngineUnavailableError",
    "LineRequest",
    "MarkEvent",
    "StateFormatError",
    "Stream",
    "StepError",
    "UnknownVoiceError",
    "VoiceControls",
    "resolve_device",
]
