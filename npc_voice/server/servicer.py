"""The NpcVoice gRPC servicer: thin glue between the proto and the engine.

Each method resolves the request against the live configuration, calls the engine, and
converts results back; domain errors become status codes in errors.py. Engine calls that
may block (export/import/reset touch the engine thread) run in a worker thread so the
event loop never waits on the device.

Semantics worth knowing (see also the proto's comments):
- a character ("guard/42") speaks one stream at a time: a second Speak for the same id while
  it speaks waits behind the first (within max_queue_wait_s) and continues its state;
- StreamStart is sent once the engine has admitted the stream, so RESOURCE_EXHAUSTED (no slot
  within max_queue_wait_s) and INVALID_ARGUMENT for unspeakable text come before any event;
- a client that cancels, disconnects or runs past its deadline frees its slot at once;
- a client that stops reading: a response write blocked for ``slow_reader_timeout_s`` ends the
  call with RESOURCE_EXHAUSTED and closes its engine stream (the status reaches the client if it
  reads on). Responses are written with ``context.write`` under a timeout for that reason:
  an ``async def ... yield`` handler cannot see that its ``yield`` is stuck.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import grpc

from npc_voice.engine import EndEvent, EngineService
from npc_voice.engine.api import STATE_FORMAT_VERSION as ENGINE_STATE_VERSION
from npc_voice.server import convert
from npc_voice.server.converse import ConverseSession
from npc_voice.server.edge import LateAudio
from npc_voice.server.errors import CallEndedError, SlowReaderError, grpc_errors
from npc_voice.server.reload import ConfigStore
from npc_voice.server.voices import checkpoint_of, parameter_count
from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


_timeout = getattr(asyncio, "timeout", None)


class ResponseWriter:
    """``context.write`` with a bound: a write the client does not take within ``timeout_s``
    raises SlowReaderError (RESOURCE_EXHAUSTED), so a client that stops reading cannot hold a
    stream, its slot and its queued audio for ever."""

    def __init__(self, context: grpc.aio.ServicerContext, timeout_s: float) -> None:
        self.context = context
        self.timeout_s = timeout_s

    async def write(self, response: pb.SpeakResponse) -> None:
        try:
            if _timeout is not None:  # Python 3.11+: a timer, no task per write (one write per chunk)
                async with _timeout(self.timeout_s):
                    await self.context.write(response)
            else:
                await asyncio.wait_for(self.context.write(response), self.timeout_s)
        except asyncio.TimeoutError:
            raise SlowReaderError(
                f"the client took no response for {self.timeout_s:g} s (server.slow_reader_timeout_s): "
                "it stopped reading; the call is ended and its audio dropped"
            ) from None
        except Exception as e:  # grpc's ExecuteBatchError: the client cancelled or disconnected
            raise CallEndedError(f"write failed, the call is over: {type(e).__name__}") from e


def _ignore_outcome(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: no "exception was never retrieved" warning


class NpcVoiceServicer(pb_grpc.NpcVoiceServicer):
    def __init__(self, engine: EngineService, store: ConfigStore) -> None:
        self.engine = engine
        self.store = store
        self.streaming_calls = 0  # Speak and Converse calls in progress (drain waits for them)
        self.sessions: set[ConverseSession] = set()
        self.draining = False
        self.late_audio = LateAudio()  # audio the engine made in time that this edge took late (GetStats)

    @contextmanager
    def _streaming_call(self) -> Iterator[None]:
        self.streaming_calls += 1
        try:
            yield
        finally:
            self.streaming_calls -= 1

    async def drain(self, grace_s: float) -> int:
        """Shutdown, first step: every Converse call stops reading and closes its contexts; then
        wait up to ``grace_s`` for the streaming calls to finish. Returns how many are left
        (the engine's close then fades them out with StreamEnd "cancelled")."""
        self.draining = True
        for session in list(self.sessions):
            session.end_input()
        deadline = time.monotonic() + grace_s
        while self.streaming_calls and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.streaming_calls

    async def Speak(  # noqa: N802 (gRPC method names)
        self, request: pb.SpeakRequest, context: grpc.aio.ServicerContext
    ) -> None:
        with self._streaming_call():
            await self._speak(request, context)

    async def _speak(self, request: pb.SpeakRequest, context: grpc.aio.ServicerContext) -> None:
        stream = None
        async with grpc_errors(context, "Speak"):
            config = self.store.config
            limits = config.server
            convert.check_id("character", request.character, limits.max_id_bytes)
            convert.check_id("request_id", request.request_id, limits.max_id_bytes)
            out = ResponseWriter(context, limits.slow_reader_timeout_s)
            character, spec = config.resolve(request.character)
            text = convert.check_text(request.text, config.server.max_text_bytes)
            fmt = convert.resolve_format(request.format, spec)
            controls = convert.resolve_controls(spec, request.overrides)
            request_id = convert.request_id_or_new(request.request_id)
            busy = convert.busy_policy(request.busy_policy)
            stream = self.engine.open_stream(
                character, spec.voice, controls, spec.lexicon, fmt.sample_rate, request_id, busy,
                encoding=fmt.encoding,
            )
            # A client that goes away (cancel, deadline, disconnect) frees the slot at once.
            context.add_done_callback(lambda _ctx: stream.close())  # type: ignore[union-attr]
            try:
                # TextError surfaces here, before anything is sent. The frontend and encoder cost
                # ~5-10 ms of CPU: a worker thread (the frontend; with the engine in its own
                # process it then waits for the preparer thread, which batches encoder passes)
                # keeps the event loop free for other streams' audio, and it starts beside the
                # engine's answer to the open (one engine round), not after it. A stream refused at
                # once (busy, queue full) ends that work early: say() skips preparing once the
                # stream has ended.
                say = asyncio.ensure_future(asyncio.to_thread(stream.say, text))
                try:
                    await stream.opened()
                except BaseException:
                    say.add_done_callback(_ignore_outcome)  # the refusal is the answer
                    raise
                await say
                stream.end_input()
                events = stream.events()
                # StreamStart goes out with the first event, i.e. once the engine has admitted the
                # stream: a CapacityError then ends the call with no half-sent stream.
                first = await anext(events)
                self.late_audio.note(first)
                await out.write(convert.start_response(fmt, request_id, character, spec.voice))
                await out.write(convert.event_to_response(first, fmt, request_id))
                if not isinstance(first, EndEvent):
                    async for event in events:
                        self.late_audio.note(event)
                        await out.write(convert.event_to_response(event, fmt, request_id))
            finally:
                stream.close()  # also when the client stopped reading: the slot is free at once

    async def Converse(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.ConverseRequest], context: grpc.aio.ServicerContext
    ) -> None:
        session = ConverseSession(self.engine, self.store, self.late_audio)
        context.add_done_callback(lambda _ctx: session.close_all_streams())
        out = ResponseWriter(context, self.store.config.server.slow_reader_timeout_s)
        with self._streaming_call():
            self.sessions.add(session)
            async with grpc_errors(context, "Converse"):
                try:
                    if self.draining:  # arrived while the server drains: nothing will be read
                        session.end_input()
                    async for response in session.run(request_iterator):
                        await out.write(response)
                except SlowReaderError:
                    if session.failure is not None:  # the output bound was hit first: that is the reason
                        raise session.failure from None
                    raise
                finally:
                    self.sessions.discard(session)
                    await session.shutdown()

    async def Cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext) -> pb.CancelResponse:  # noqa: N802
        async with grpc_errors(context, "Cancel"):
            self._check_ids(request.character, request.request_id)
            character, _ = self.store.config.resolve(request.character)
            # Waits for the fade frame on the engine thread: keep the event loop free meanwhile.
            cancelled, samples = await asyncio.to_thread(self.engine.cancel_character, character, request.request_id)
            return pb.CancelResponse(cancelled=cancelled, samples_produced=samples)
        raise AssertionError("unreachable")  # grpc_errors aborts on every error

    async def ResetCharacter(  # noqa: N802
        self, request: pb.ResetCharacterRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetCharacterResponse:
        async with grpc_errors(context, "ResetCharacter"):
            self._check_ids(request.character)
            character, _ = self.store.config.resolve(request.character)
            await asyncio.to_thread(self.engine.reset_character, character)
            return pb.ResetCharacterResponse()
        raise AssertionError("unreachable")

    async def ExportCharacterState(  # noqa: N802
        self, request: pb.ExportCharacterStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportCharacterStateResponse:
        async with grpc_errors(context, "ExportCharacterState"):
            self._check_ids(request.character)
            character, spec = self.store.config.resolve(request.character)
            # A character that has not spoken yet exports its voice's fresh state.
            data = await asyncio.to_thread(self.engine.export_character, character, spec.voice)
            return pb.ExportCharacterStateResponse(state=data, format_version=ENGINE_STATE_VERSION)
        raise AssertionError("unreachable")

    async def ImportCharacterState(  # noqa: N802
        self, request: pb.ImportCharacterStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.ImportCharacterStateResponse:
        async with grpc_errors(context, "ImportCharacterState"):
            self._check_ids(request.character)
            character, spec = self.store.config.resolve(request.character)
            await asyncio.to_thread(self.engine.import_character, character, bytes(request.state), spec.voice)
            return pb.ImportCharacterStateResponse()
        raise AssertionError("unreachable")

    def _check_ids(self, character: str, request_id: str = "") -> None:
        max_bytes = self.store.config.server.max_id_bytes
        convert.check_id("character", character, max_bytes)
        convert.check_id("request_id", request_id, max_bytes)

    async def ListCharacters(  # noqa: N802
        self, request: pb.ListCharactersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCharactersResponse:
        config = self.store.config
        infos = [
            pb.CharacterInfo(
                name=c.name,
                voice=c.voice,
                description=c.description,
                speed=c.speed,
                pitch_semitones=c.pitch,
                formant=c.formant,
                breathiness=c.breathiness,
                volume=c.volume,
                default_format=convert.OutputFormat(c.encoding, c.sample_rate).to_proto(),
            )
            for c in config.characters.values()
        ]
        return pb.ListCharactersResponse(characters=infos, default_character=config.default_character)

    async def ListVoices(  # noqa: N802
        self, request: pb.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListVoicesResponse:
        infos = []
        for spec in self.store.config.voices.values():
            model = self.store.voices.get(spec.name)
            infos.append(
                pb.VoiceInfo(
                    name=spec.name,
                    description=spec.description,
                    native_sample_rate_hz=int(getattr(model, "sample_rate", 0)),
                    checkpoint=checkpoint_of(spec),
                    parameters=parameter_count(model) if model is not None else 0,
                )
            )
        return pb.ListVoicesResponse(voices=infos)

    async def GetStats(self, request: pb.GetStatsRequest, context: grpc.aio.ServicerContext) -> pb.GetStatsResponse:  # noqa: N802
        s = self.engine.stats()
        return pb.GetStatsResponse(
            active_streams=s.active_streams,
            slots_in_use=s.slots_in_use,
            slots_total=s.slots_total,
            ticks=s.ticks,
            tick_ms_mean=s.tick_ms_mean,
            tick_ms_p99=s.tick_ms_p99,
            underruns=s.underruns,
            characters_known=s.characters_known,
            characters_evicted=s.characters_evicted,
            device=s.device,
            lines_completed=s.lines_completed,
            lines_cancelled=s.lines_cancelled,
            lines_rejected=s.lines_rejected,
            streams_waiting=s.streams_waiting,
            lines_failed=s.lines_failed,
            lines_interrupted=s.lines_interrupted,
            lines_opened=s.lines_opened,
            batch_fill=s.batch_fill,
            step_failures=s.step_failures,
            characters_forgotten=s.characters_forgotten,
            serving=s.serving,
            load=s.load,
            lines_prepared=s.lines_prepared,
            prepare_cache_hits=s.prepare_cache_hits,
            prepare_cache_bytes=s.prepare_cache_bytes,
            late_audio=self.late_audio.count,
        )
