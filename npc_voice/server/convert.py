"""Proto <-> engine dataclasses: request checks, formats, voice controls and events.

Plain functions, no gRPC context: the servicer and Converse both use them, and errors are
raised as ``RequestError`` (mapped to INVALID_ARGUMENT in errors.py).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from npc_voice.audio.pcm import encode_pcm
from npc_voice.config import STYLES, CharacterSpec
from npc_voice.contracts import CONTROL_RANGES, SAMPLE_RATES
from npc_voice.engine.api import AudioEvent, BusyPolicy, EndEvent, MarkEvent, VoiceControls
from npc_voice.server.errors import RequestError
from npc_voice.v1 import npc_voice_pb2 as pb

ENCODING_NAMES = {pb.PCM_S16LE: "s16le", pb.PCM_F32LE: "f32le"}
ENCODING_ENUMS = {name: enum for enum, name in ENCODING_NAMES.items()}
END_REASONS = {
    "completed": pb.END_REASON_COMPLETED,
    "cancelled": pb.END_REASON_CANCELLED,
    "interrupted": pb.END_REASON_INTERRUPTED,
}
BUSY_POLICIES: dict[int, BusyPolicy] = {
    pb.BUSY_POLICY_UNSPECIFIED: BusyPolicy.QUEUE,
    pb.BUSY_POLICY_QUEUE: BusyPolicy.QUEUE,
    pb.BUSY_POLICY_INTERRUPT: BusyPolicy.INTERRUPT,
    pb.BUSY_POLICY_REJECT: BusyPolicy.REJECT,
}


def busy_policy(value: int) -> BusyPolicy:
    if value not in BUSY_POLICIES:
        raise RequestError(f"busy_policy {value} is not one of QUEUE (1), INTERRUPT (2), REJECT (3)")
    return BUSY_POLICIES[value]



@dataclass(frozen=True)
class OutputFormat:
    encoding: str  # "s16le" | "f32le"
    sample_rate: int

    def to_proto(self) -> pb.AudioFormat:
        return pb.AudioFormat(encoding=ENCODING_ENUMS[self.encoding], sample_rate_hz=self.sample_rate)


def request_id_or_new(request_id: str) -> str:
    return request_id or uuid.uuid4().hex[:16]


def check_id(kind: str, value: str, max_bytes: int) -> str:
    """An id (character, request, context) within ``max_bytes`` of UTF-8: ids are copied into
    every response and log line, so their length is checked before anything else is done."""
    n = len(value.encode("utf-8", "surrogatepass"))
    if n > max_bytes:
        raise RequestError(f"{kind} is {n} bytes of UTF-8; the limit is {max_bytes} (starts {value[:24]!r})")
    return value


def check_text(text: str, max_bytes: int) -> str:
    if not text.strip():
        raise RequestError("text is empty")
    n = len(text.encode("utf-8"))
    if n > max_bytes:
        raise RequestError(f"text is {n} bytes of UTF-8; the limit is {max_bytes} (starts {text[:40]!r})")
    return text


def resolve_format(fmt: pb.AudioFormat, spec: CharacterSpec) -> OutputFormat:
    """Unset fields fall back to the character's default format."""
    if fmt.encoding == pb.ENCODING_UNSPECIFIED:
        encoding = spec.encoding
    elif fmt.encoding in ENCODING_NAMES:
        encoding = ENCODING_NAMES[fmt.encoding]
    else:
        raise RequestError(f"unknown encoding {fmt.encoding}; use PCM_S16LE (1) or PCM_F32LE (2)")
    rate = fmt.sample_rate_hz or spec.sample_rate
    if rate not in SAMPLE_RATES:
        raise RequestError(f"sample rate {rate} Hz is not supported; use one of {', '.join(map(str, SAMPLE_RATES))}")
    return OutputFormat(encoding, int(rate))


def resolve_controls(spec: CharacterSpec, overrides: pb.VoiceOverrides) -> VoiceControls:
    """The character's configured controls with the request's overrides applied."""
    values: dict[str, float] = {}
    for name, r in CONTROL_RANGES.items():  # override ranges as the proto documents them (VoiceOverrides)
        value = float(getattr(spec, r.config_key))
        if overrides.HasField(name):
            given = float(getattr(overrides, name))
            lo, hi = r.override
            if not math.isfinite(given) or not lo <= given <= hi:
                raise RequestError(f"override {name}={given:g} is out of range [{lo:g}, {hi:g}]")
            value = value * given if r.combine == "mul" else value + given
        # The combination is clamped to the value range: what a character may be and the engine accepts.
        values[name] = min(r.value[1], max(r.value[0], value))
    style = overrides.style if overrides.HasField("style") and overrides.style else spec.style
    if style and style not in STYLES:
        raise RequestError(f"override style={style!r} is not one of {', '.join(STYLES)} (or empty)")
    return VoiceControls(**values, style=style)


def marks_to_proto(event: MarkEvent) -> pb.Marks:
    def conv(marks: tuple[tuple[str, int, int], ...]) -> list[pb.Mark]:
        return [pb.Mark(label=label, start_sample=s, end_sample=e) for label, s, e in marks]

    return pb.Marks(phonemes=conv(event.phonemes), visemes=conv(event.visemes), words=conv(event.words))


def event_to_response(
    event: MarkEvent | AudioEvent | EndEvent, fmt: OutputFormat, request_id: str, context_id: str = ""
) -> pb.SpeakResponse:
    if isinstance(event, AudioEvent):
        pcm = event.data or encode_pcm(event.pcm, fmt.encoding)  # the engine encodes per batch when asked
        audio = pb.AudioChunk(pcm=pcm, sample_offset=event.sample_offset)
        return pb.SpeakResponse(context_id=context_id, audio=audio)
    if isinstance(event, MarkEvent):
        return pb.SpeakResponse(context_id=context_id, marks=marks_to_proto(event))
    timings = pb.Timings(
        queued_ms=event.queued_ms,
        first_audio_ms=event.first_audio_ms,
        total_ms=event.total_ms,
        audio_ms=1000.0 * event.total_samples / fmt.sample_rate,
    )
    end = pb.StreamEnd(
        reason=END_REASONS.get(event.reason, pb.END_REASON_UNSPECIFIED),
        total_samples=event.total_samples,
        timings=timings,
        request_id=request_id,
    )
    return pb.SpeakResponse(context_id=context_id, end=end)


def start_response(
    fmt: OutputFormat, request_id: str, character: str, voice: str, context_id: str = ""
) -> pb.SpeakResponse:
    start = pb.StreamStart(format=fmt.to_proto(), request_id=request_id, character=character, voice=voice)
    return pb.SpeakResponse(context_id=context_id, start=start)
