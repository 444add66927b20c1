"""A small Python client for the npc-voice daemon (sync and asyncio).

    from npc_voice.client import NpcVoiceClient
    with NpcVoiceClient("127.0.0.1:50051") as c:
        pcm, rate, marks = c.speak_to_array("Halt! Who goes there?", character="guard/7")

    async with AsyncNpcVoiceClient("127.0.0.1:50051", token="...") as c:
        async for event in c.speak("Fresh bread!", character="merchant"):
            ...   # npc_voice.v1.npc_voice_pb2.SpeakResponse: start, audio, marks, end

Errors are ``grpc.RpcError`` (sync) / ``grpc.aio.AioRpcError`` with the daemon's status code.

Every call about one character carries the metadata header ``x-npc-character: <character id>``
(``CHARACTER_HEADER``), so a proxy in front of several daemons can send all of a character's
calls to the daemon that holds its voice state (README "Operating it"). A Converse call names
its one character with ``converse(..., character=...)``.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc

ENCODINGS = {"s16le": pb.PCM_S16LE, "f32le": pb.PCM_F32LE, "": pb.ENCODING_UNSPECIFIED}
CHARACTER_HEADER = "x-npc-character"  # gRPC metadata: the call's character id, for character-affine routing
Metadata = tuple[tuple[str, str], ...]


def routing_metadata(character: str) -> Metadata:
    """The ``x-npc-character`` entry for a call about ``character``.

    None for "" (the default character: name it explicitly behind a proxy) or for an id that is
    not printable ASCII (the daemon rejects such ids anyway; gRPC metadata could not carry it)."""
    if character and all(" " < c <= "~" for c in character):
        return ((CHARACTER_HEADER, character),)
    return ()


@dataclass(frozen=True)
class SpokenLine:
    """Everything a Speak call returned, decoded."""

    pcm: np.ndarray  # float32 [n] in [-1, 1]
    sample_rate: int
    marks: pb.Marks  # all marks of the line, merged
    start: pb.StreamStart
    end: pb.StreamEnd


def speak_request(
    text: str,
    character: str = "",
    *,
    sample_rate: int = 0,
    encoding: str = "",
    request_id: str = "",
    speed: float | None = None,
    pitch_semitones: float | None = None,
    volume: float | None = None,
    formant: float | None = None,
    breathiness: float | None = None,
    busy_policy: str = "queue",
) -> pb.SpeakRequest:
    """``busy_policy``: what happens when the character is already speaking — "queue" (wait behind
    it, bounded), "interrupt" (barge in: its line fades out, ends INTERRUPTED) or "reject"."""
    overrides = pb.VoiceOverrides()
    for name, value in (
        ("speed", speed),
        ("pitch_semitones", pitch_semitones),
        ("volume", volume),
        ("formant", formant),
        ("breathiness", breathiness),
    ):
        if value is not None:
            setattr(overrides, name, value)
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding {encoding!r} is not one of s16le, f32le")
    if busy_policy not in BUSY_POLICIES:
        raise ValueError(f"busy_policy {busy_policy!r} is not one of {', '.join(BUSY_POLICIES)}")
    return pb.SpeakRequest(
        character=character,
        text=text,
        format=pb.AudioFormat(encoding=ENCODINGS[encoding], sample_rate_hz=sample_rate),
        request_id=request_id,
        overrides=overrides,
        busy_policy=BUSY_POLICIES[busy_policy],  # type: ignore[arg-type]
    )


BUSY_POLICIES = {"queue": pb.BUSY_POLICY_QUEUE, "interrupt": pb.BUSY_POLICY_INTERRUPT, "reject": pb.BUSY_POLICY_REJECT}


def decode_pcm(data: bytes, encoding: int) -> np.ndarray:
    """AudioChunk.pcm -> float32 samples."""
    if encoding == pb.PCM_F32LE:
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0  # encode_pcm scales by 32767


def collect(events: Iterable[pb.SpeakResponse]) -> SpokenLine:
    """Assemble a line from its events (checks that offsets are contiguous)."""
    start: pb.StreamStart | None = None
    end: pb.StreamEnd | None = None
    chunks: list[np.ndarray] = []
    marks = pb.Marks()
    n = 0
    for ev in events:
        kind = ev.WhichOneof("event")
        if kind == "start":
            start = ev.start
        elif kind == "audio":
            assert start is not None, "AudioChunk before StreamStart"
            if ev.audio.sample_offset != n:
                raise ValueError(f"audio chunk at offset {ev.audio.sample_offset}, expected {n}")
            chunk = decode_pcm(ev.audio.pcm, start.format.encoding)
            chunks.append(chunk)
            n += len(chunk)
        elif kind == "marks":
            marks.MergeFrom(ev.marks)
        elif kind == "end":
            end = ev.end
    if start is None or end is None:
        raise ValueError("stream ended without StreamStart/StreamEnd")
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return SpokenLine(pcm, start.format.sample_rate_hz, marks, start, end)


_WARNED: set[str] = set()  # addresses already warned about (once per process)


def _is_loopback(address: str) -> bool:
    """Whether ``address`` ("host:port", "[::1]:port", "dns:///host:port", "unix:...") stays on this machine."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.split("///")[-1].removeprefix("ipv4:").removeprefix("ipv6:")
    host = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_token_in_clear(address: str, token: str | None, tls_ca: str | bytes | None) -> None:
    """Warn once per address when a token would cross the network without TLS."""
    if token and tls_ca is None and address not in _WARNED and not _is_loopback(address):
        _WARNED.add(address)
        warnings.warn(
            f"npc-voice client: sending a bearer token to {address} over a plaintext channel; anyone on the path "
            "can read it (pass tls_ca= to use TLS)",
            UserWarning,
            stacklevel=3,
        )


def _channel(address: str, tls_ca: str | bytes | None, asyncio: bool) -> Any:
    if tls_ca is None:
        return (grpc.aio.insecure_channel if asyncio else grpc.insecure_channel)(address)
    root = Path(tls_ca).read_bytes() if isinstance(tls_ca, str) else tls_ca
    creds = grpc.ssl_channel_credentials(root_certificates=root)
    return (grpc.aio.secure_channel if asyncio else grpc.secure_channel)(address, creds)


class NpcVoiceClient:
    """Blocking client. ``token`` adds `authorization: Bearer <token>`; ``tls_ca`` (PEM path or bytes) enables TLS."""

    def __init__(self, address: str, token: str | None = None, tls_ca: str | bytes | None = None) -> None:
        warn_token_in_clear(address, token, tls_ca)
        self.channel = _channel(address, tls_ca, asyncio=False)
        self.stub = pb_grpc.NpcVoiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata: Metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def __enter__(self) -> NpcVoiceClient:
        return self

    def _for(self, character: str) -> Metadata:
        return self.metadata + routing_metadata(character)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def speak(
        self, text: str, character: str = "", *, timeout: float | None = None, **kw: Any
    ) -> Iterator[pb.SpeakResponse]:
        """Stream a line's events (kw: sample_rate, encoding, request_id, speed, pitch_semitones, ...)."""
        req = speak_request(text, character, **kw)
        return self.stub.Speak(req, timeout=timeout, metadata=self._for(character))  # an iterator with .cancel()

    def speak_to_array(self, text: str, character: str = "", **kw: Any) -> tuple[np.ndarray, int, pb.Marks]:
        line = collect(self.speak(text, character, **kw))
        return line.pcm, line.sample_rate, line.marks

    def converse(
        self, requests: Iterable[pb.ConverseRequest], timeout: float | None = None, character: str = ""
    ) -> Iterator[pb.SpeakResponse]:
        """``character``: the one character this call's contexts speak as (routes the call; see module doc)."""
        return self.stub.Converse(iter(requests), timeout=timeout, metadata=self._for(character))  # + .cancel()

    def cancel(self, character: str, request_id: str = "") -> pb.CancelResponse:
        req = pb.CancelRequest(character=character, request_id=request_id)
        return self.stub.Cancel(req, metadata=self._for(character))

    def reset(self, character: str) -> None:
        self.stub.ResetCharacter(pb.ResetCharacterRequest(character=character), metadata=self._for(character))

    def export_state(self, character: str) -> bytes:
        req = pb.ExportCharacterStateRequest(character=character)
        return bytes(self.stub.ExportCharacterState(req, metadata=self._for(character)).state)

    def import_state(self, character: str, state: bytes) -> None:
        req = pb.ImportCharacterStateRequest(character=character, state=state)
        self.stub.ImportCharacterState(req, metadata=self._for(character))

    def list_characters(self) -> pb.ListCharactersResponse:
        return self.stub.ListCharacters(pb.ListCharactersRequest(), metadata=self.metadata)

    def list_voices(self) -> pb.ListVoicesResponse:
        return self.stub.ListVoices(pb.ListVoicesRequest(), metadata=self.metadata)

    def stats(self) -> pb.GetStatsResponse:
        return self.stub.GetStats(pb.GetStatsRequest(), metadata=self.metadata)

    def health(self, service: str = "", timeout: float | None = 5.0) -> bool:
        """True when the daemon reports SERVING."""
        req = health_pb2.HealthCheckRequest(service=service)
        resp = self.health_stub.Check(req, timeout=timeout, metadata=self.metadata)
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


class AsyncNpcVoiceClient:
    """asyncio client with the same methods as NpcVoiceClient (awaitable / async iterators)."""

    def __init__(self, address: str, token: str | None = None, tls_ca: str | bytes | None = None) -> None:
        warn_token_in_clear(address, token, tls_ca)
        self.channel = _channel(address, tls_ca, asyncio=True)
        self.stub = pb_grpc.NpcVoiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata: Metadata = (("authorization", f"Bearer {token}"),) if token else ()

    async def __aenter__(self) -> AsyncNpcVoiceClient:
        return self

    def _for(self, character: str) -> Metadata:
        return self.metadata + routing_metadata(character)

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    def speak(self, text: str, character: str = "", *, timeout: float | None = None, **kw: Any) -> Any:
        """The call object: ``async for event in client.speak(...)``; ``.cancel()`` disconnects."""
        req = speak_request(text, character, **kw)
        return self.stub.Speak(req, timeout=timeout, metadata=self._for(character))

    async def speak_to_array(self, text: str, character: str = "", **kw: Any) -> tuple[np.ndarray, int, pb.Marks]:
        events = [ev async for ev in self.speak(text, character, **kw)]
        line = collect(events)
        return line.pcm, line.sample_rate, line.marks

    def converse(
        self,
        requests: AsyncIterable[pb.ConverseRequest] | Iterable[pb.ConverseRequest] | None = None,
        timeout: float | None = None,
        character: str = "",
    ) -> Any:
        """The bidirectional call; pass an iterator, or None and use ``call.write(...)``/``done_writing()``.
        ``character``: the one character this call's contexts speak as (routes the call)."""
        return self.stub.Converse(requests, timeout=timeout, metadata=self._for(character))

    async def cancel(self, character: str, request_id: str = "") -> pb.CancelResponse:
        req = pb.CancelRequest(character=character, request_id=request_id)
        return await self.stub.Cancel(req, metadata=self._for(character))

    async def reset(self, character: str) -> None:
        req = pb.ResetCharacterRequest(character=character)
        await self.stub.ResetCharacter(req, metadata=self._for(character))

    async def export_state(self, character: str) -> bytes:
        req = pb.ExportCharacterStateRequest(character=character)
        return bytes((await self.stub.ExportCharacterState(req, metadata=self._for(character))).state)

    async def import_state(self, character: str, state: bytes) -> None:
        req = pb.ImportCharacterStateRequest(character=character, state=state)
        await self.stub.ImportCharacterState(req, metadata=self._for(character))

    async def list_characters(self) -> pb.ListCharactersResponse:
        return await self.stub.ListCharacters(pb.ListCharactersRequest(), metadata=self.metadata)

    async def list_voices(self) -> pb.ListVoicesResponse:
        return await self.stub.ListVoices(pb.ListVoicesRequest(), metadata=self.metadata)

    async def stats(self) -> pb.GetStatsResponse:
        return await self.stub.GetStats(pb.GetStatsRequest(), metadata=self.metadata)

    async def health(self, service: str = "", timeout: float | None = 5.0) -> bool:
        req = health_pb2.HealthCheckRequest(service=service)
        resp = await self.health_stub.Check(req, timeout=timeout, metadata=self.metadata)
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
