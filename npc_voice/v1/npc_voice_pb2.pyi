from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    PCM_S16LE: _ClassVar[Encoding]
    PCM_F32LE: _ClassVar[Encoding]

class BusyPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUSY_POLICY_UNSPECIFIED: _ClassVar[BusyPolicy]
    BUSY_POLICY_QUEUE: _ClassVar[BusyPolicy]
    BUSY_POLICY_INTERRUPT: _ClassVar[BusyPolicy]
    BUSY_POLICY_REJECT: _ClassVar[BusyPolicy]

class EndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_REASON_UNSPECIFIED: _ClassVar[EndReason]
    END_REASON_COMPLETED: _ClassVar[EndReason]
    END_REASON_CANCELLED: _ClassVar[EndReason]
    END_REASON_INTERRUPTED: _ClassVar[EndReason]
ENCODING_UNSPECIFIED: Encoding
PCM_S16LE: Encoding
PCM_F32LE: Encoding
BUSY_POLICY_UNSPECIFIED: BusyPolicy
BUSY_POLICY_QUEUE: BusyPolicy
BUSY_POLICY_INTERRUPT: BusyPolicy
BUSY_POLICY_REJECT: BusyPolicy
END_REASON_UNSPECIFIED: EndReason
END_REASON_COMPLETED: EndReason
END_REASON_CANCELLED: EndReason
END_REASON_INTERRUPTED: EndReason

class AudioFormat(_message.Message):
    __slots__ = ("encoding", "sample_rate_hz")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    encoding: Encoding
    sample_rate_hz: int
    def __init__(self, encoding: _Optional[_Union[Encoding, str]] = ..., sample_rate_hz: _Optional[int] = ...) -> None: ...

class VoiceOverrides(_message.Message):
    __slots__ = ("speed", "pitch_semitones", "volume", "formant", "breathiness", "style")
    SPEED_FIELD_NUMBER: _ClassVar[int]
    PITCH_SEMITONES_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    FORMANT_FIELD_NUMBER: _ClassVar[int]
    BREATHINESS_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    speed: float
    pitch_semitones: float
    volume: float
    formant: float
    breathiness: float
    style: str
    def __init__(self, speed: _Optional[float] = ..., pitch_semitones: _Optional[float] = ..., volume: _Optional[float] = ..., formant: _Optional[float] = ..., breathiness: _Optional[float] = ..., style: _Optional[str] = ...) -> None: ...

class SpeakRequest(_message.Message):
    __slots__ = ("character", "text", "format", "request_id", "overrides", "busy_policy")
    CHARACTER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    BUSY_POLICY_FIELD_NUMBER: _ClassVar[int]
    character: str
    text: str
    format: AudioFormat
    request_id: str
    overrides: VoiceOverrides
    busy_policy: BusyPolicy
    def __init__(self, character: _Optional[str] = ..., text: _Optional[str] = ..., format: _Optional[_Union[AudioFormat, _Mapping]] = ..., request_id: _Optional[str] = ..., overrides: _Optional[_Union[VoiceOverrides, _Mapping]] = ..., busy_policy: _Optional[_Union[BusyPolicy, str]] = ...) -> None: ...

class SpeakResponse(_message.Message):
    __slots__ = ("context_id", "start", "audio", "marks", "end")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    MARKS_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    start: StreamStart
    audio: AudioChunk
    marks: Marks
    end: StreamEnd
    def __init__(self, context_id: _Optional[str] = ..., start: _Optional[_Union[StreamStart, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., marks: _Optional[_Union[Marks, _Mapping]] = ..., end: _Optional[_Union[StreamEnd, _Mapping]] = ...) -> None: ...

class StreamStart(_message.Message):
    __slots__ = ("format", "request_id", "character", "voice")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHARACTER_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    format: AudioFormat
    request_id: str
    character: str
    voice: str
    def __init__(self, format: _Optional[_Union[AudioFormat, _Mapping]] = ..., request_id: _Optional[str] = ..., character: _Optional[str] = ..., voice: _Optional[str] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("pcm", "sample_offset")
    PCM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    sample_offset: int
    def __init__(self, pcm: _Optional[bytes] = ..., sample_offset: _Optional[int] = ...) -> None: ...

class Mark(_message.Message):
    __slots__ = ("label", "start_sample", "end_sample")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    END_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    label: str
    start_sample: int
    end_sample: int
    def __init__(self, label: _Optional[str] = ..., start_sample: _Optional[int] = ..., end_sample: _Optional[int] = ...) -> None: ...

class Marks(_message.Message):
    __slots__ = ("phonemes", "visemes", "words")
    PHONEMES_FIELD_NUMBER: _ClassVar[int]
    VISEMES_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    phonemes: _containers.RepeatedCompositeFieldContainer[Mark]
    visemes: _containers.RepeatedCompositeFieldContainer[Mark]
    words: _containers.RepeatedCompositeFieldContainer[Mark]
    def __init__(self, phonemes: _Optional[_Iterable[_Union[Mark, _Mapping]]] = ..., visemes: _Optional[_Iterable[_Union[Mark, _Mapping]]] = ..., words: _Optional[_Iterable[_Union[Mark, _Mapping]]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queued_ms", "first_audio_ms", "total_ms", "audio_ms")
    QUEUED_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    queued_ms: float
    first_audio_ms: float
    total_ms: float
    audio_ms: float
    def __init__(self, queued_ms: _Optional[float] = ..., first_audio_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., audio_ms: _Optional[float] = ...) -> None: ...

class StreamEnd(_message.Message):
    __slots__ = ("reason", "total_samples", "timings", "request_id")
    REASON_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    reason: EndReason
    total_samples: int
    timings: Timings
    request_id: str
    def __init__(self, reason: _Optional[_Union[EndReason, str]] = ..., total_samples: _Optional[int] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ConverseConfig(_message.Message):
    __slots__ = ("character", "format", "overrides", "max_buffer_delay_ms", "request_id")
    CHARACTER_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    MAX_BUFFER_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    character: str
    format: AudioFormat
    overrides: VoiceOverrides
    max_buffer_delay_ms: int
    request_id: str
    def __init__(self, character: _Optional[str] = ..., format: _Optional[_Union[AudioFormat, _Mapping]] = ..., overrides: _Optional[_Union[VoiceOverrides, _Mapping]] = ..., max_buffer_delay_ms: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ConverseRequest(_message.Message):
    __slots__ = ("context_id", "config", "text", "flush", "cancel", "close")
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    context_id: str
    config: ConverseConfig
    text: str
    flush: bool
    cancel: bool
    close: bool
    def __init__(self, context_id: _Optional[str] = ..., config: _Optional[_Union[ConverseConfig, _Mapping]] = ..., text: _Optional[str] = ..., flush: _Optional[bool] = ..., cancel: _Optional[bool] = ..., close: _Optional[bool] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("character", "request_id")
    CHARACTER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    character: str
    request_id: str
    def __init__(self, character: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("cancelled", "samples_produced")
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PRODUCED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    samples_produced: int
    def __init__(self, cancelled: _Optional[bool] = ..., samples_produced: _Optional[int] = ...) -> None: ...

class ResetCharacterRequest(_message.Message):
    __slots__ = ("character",)
    CHARACTER_FIELD_NUMBER: _ClassVar[int]
    character: str
    def __init__(self, character: _Optional[str] = ...) -> None: ...

class ResetCharacterResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportCharacterStateRequest(_message.Message):
    __slots__ = ("character",)
    CHARACTER_FIELD_NUMBER: _ClassVar[int]
    character: str
    def __init__(self, character: _Optional[str] = ...) -> None: ...

class ExportCharacterStateResponse(_message.Message):
    __slots__ = ("state", "format_version")
    STATE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    state: bytes
    format_version: int
    def __init__(self, state: _Optional[bytes] = ..., format_version: _Optional[int] = ...) -> None: ...

class ImportCharacterStateRequest(_message.Message):
    __slots__ = ("character", "state")
    CHARACTER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    character: str
    state: bytes
    def __init__(self, character: _Optional[str] = ..., state: _Optional[bytes] = ...) -> None: ...

class ImportCharacterStateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCharactersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CharacterInfo(_message.Message):
    __slots__ = ("name", "voice", "description", "speed", "pitch_semitones", "formant", "breathiness", "volume", "default_format")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    PITCH_SEMITONES_FIELD_NUMBER: _ClassVar[int]
    FORMANT_FIELD_NUMBER: _ClassVar[int]
    BREATHINESS_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    name: str
    voice: str
    description: str
    speed: float
    pitch_semitones: float
    formant: float
    breathiness: float
    volume: float
    default_format: AudioFormat
    def __init__(self, name: _Optional[str] = ..., voice: _Optional[str] = ..., description: _Optional[str] = ..., speed: _Optional[float] = ..., pitch_semitones: _Optional[float] = ..., formant: _Optional[float] = ..., breathiness: _Optional[float] = ..., volume: _Optional[float] = ..., default_format: _Optional[_Union[AudioFormat, _Mapping]] = ...) -> None: ...

class ListCharactersResponse(_message.Message):
    __slots__ = ("characters", "default_character")
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CHARACTER_FIELD_NUMBER: _ClassVar[int]
    characters: _containers.RepeatedCompositeFieldContainer[CharacterInfo]
    default_character: str
    def __init__(self, characters: _Optional[_Iterable[_Union[CharacterInfo, _Mapping]]] = ..., default_character: _Optional[str] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VoiceInfo(_message.Message):
    __slots__ = ("name", "description", "native_sample_rate_hz", "checkpoint", "parameters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    NATIVE_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    native_sample_rate_hz: int
    checkpoint: str
    parameters: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., native_sample_rate_hz: _Optional[int] = ..., checkpoint: _Optional[str] = ..., parameters: _Optional[int] = ...) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices",)
    VOICES_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[VoiceInfo]
    def __init__(self, voices: _Optional[_Iterable[_Union[VoiceInfo, _Mapping]]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("active_streams", "slots_in_use", "slots_total", "ticks", "tick_ms_mean", "tick_ms_p99", "underruns", "characters_known", "characters_evicted", "device", "lines_completed", "lines_cancelled", "lines_rejected", "streams_waiting", "lines_failed", "lines_interrupted", "lines_opened", "batch_fill", "step_failures", "characters_forgotten", "serving", "load", "lines_prepared", "prepare_cache_hits", "prepare_cache_bytes", "late_audio")
    ACTIVE_STREAMS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_IN_USE_FIELD_NUMBER: _ClassVar[int]
    SLOTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TICKS_FIELD_NUMBER: _ClassVar[int]
    TICK_MS_MEAN_FIELD_NUMBER: _ClassVar[int]
    TICK_MS_P99_FIELD_NUMBER: _ClassVar[int]
    UNDERRUNS_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_KNOWN_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_EVICTED_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LINES_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    LINES_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    LINES_REJECTED_FIELD_NUMBER: _ClassVar[int]
    STREAMS_WAITING_FIELD_NUMBER: _ClassVar[int]
    LINES_FAILED_FIELD_NUMBER: _ClassVar[int]
    LINES_INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    LINES_OPENED_FIELD_NUMBER: _ClassVar[int]
    BATCH_FILL_FIELD_NUMBER: _ClassVar[int]
    STEP_FAILURES_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LINES_PREPARED_FIELD_NUMBER: _ClassVar[int]
    PREPARE_CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    PREPARE_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LATE_AUDIO_FIELD_NUMBER: _ClassVar[int]
    active_streams: int
    slots_in_use: int
    slots_total: int
    ticks: int
    tick_ms_mean: float
    tick_ms_p99: float
    underruns: int
    characters_known: int
    characters_evicted: int
    device: str
    lines_completed: int
    lines_cancelled: int
    lines_rejected: int
    streams_waiting: int
    lines_failed: int
    lines_interrupted: int
    lines_opened: int
    batch_fill: float
    step_failures: int
    characters_forgotten: int
    serving: bool
    load: float
    lines_prepared: int
    prepare_cache_hits: int
    prepare_cache_bytes: int
    late_audio: int
    def __init__(self, active_streams: _Optional[int] = ..., slots_in_use: _Optional[int] = ..., slots_total: _Optional[int] = ..., ticks: _Optional[int] = ..., tick_ms_mean: _Optional[float] = ..., tick_ms_p99: _Optional[float] = ..., underruns: _Optional[int] = ..., characters_known: _Optional[int] = ..., characters_evicted: _Optional[int] = ..., device: _Optional[str] = ..., lines_completed: _Optional[int] = ..., lines_cancelled: _Optional[int] = ..., lines_rejected: _Optional[int] = ..., streams_waiting: _Optional[int] = ..., lines_failed: _Optional[int] = ..., lines_interrupted: _Optional[int] = ..., lines_opened: _Optional[int] = ..., batch_fill: _Optional[float] = ..., step_failures: _Optional[int] = ..., characters_forgotten: _Optional[int] = ..., serving: _Optional[bool] = ..., load: _Optional[float] = ..., lines_prepared: _Optional[int] = ..., prepare_cache_hits: _Optional[int] = ..., prepare_cache_bytes: _Optional[int] = ..., late_audio: _Optional[int] = ...) -> None: ...
