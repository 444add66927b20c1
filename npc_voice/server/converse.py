"""Converse: text arrives in pieces; each context speaks whole phrases on one engine Stream.

Per context (``context_id``, "default" when empty):
- text pieces are appended to a buffer; every complete phrase is spoken at once. A phrase ends
  at one of ``. ! ? ; : ,`` followed by whitespace or the end of the buffer (but not ``3.`` /
  ``3,`` / ``3:`` at the end, which may be a number still being written), or at a newline;
- text with no boundary is spoken after ``max_buffer_delay_ms`` (default 400), cut at its last
  space so words are not split;
- ``flush`` speaks the buffer now; ``close`` speaks it and ends the context ("completed" once
  the audio is out); ``cancel`` drops the buffer, fades the audio out and ends the context;
- the first phrase opens one engine Stream for the context: every later phrase continues the
  same sample clock and the character's state. A ``config`` arriving after speech has started
  ends that stream (after its phrases) and applies to the next one (a new StreamStart);
- client half-close closes every context (buffers are spoken first); the call ends when the
  last context has sent its StreamEnd.

Limits (``server:`` config; a limit reached ends the call with the status in errors.py):
- a message without an action is ignored (it creates no context); ids longer than
  ``max_id_bytes`` are INVALID_ARGUMENT;
- at most ``max_contexts_per_call`` contexts open or still speaking (RESOURCE_EXHAUSTED);
- a context with no message for ``context_idle_timeout_s`` is closed (as by ``close``);
- text sent but not yet begun speaking, per context, at most ``max_buffered_text_bytes``
  (RESOURCE_EXHAUSTED: text arrives much faster than it is spoken);
- audio waiting for a client that does not read, at most ``max_output_buffer_bytes`` per call
  (RESOURCE_EXHAUSTED; the call's streams are closed at once, so memory stays bounded).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from npc_voice.engine import EndEvent, EngineService, MarkEvent, Stream
from npc_voice.server import convert
from npc_voice.server.edge import LateAudio
from npc_voice.server.errors import LimitError
from npc_voice.server.reload import ConfigStore
from npc_voice.v1 import npc_voice_pb2 as pb

log = logging.getLogger(__name__)

DEFAULT_DELAY_MS = 400
_BOUNDARY = re.compile(r"[.!?;:,](?=\s)|\n|[.!?;:,]+$")
_DIGIT_END = re.compile(r"\d[.,:]$")  # "3." at the end of the buffer: maybe "3.5" is coming
_SPEAKABLE = re.compile(r"\w")


def split_phrases(buffer: str, max_bytes: int) -> tuple[list[str], str]:
    """Complete phrases at the front of ``buffer`` and the unfinished rest."""
    phrases: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(buffer):
        if m.end() == len(buffer) and _DIGIT_END.search(buffer):
            break
        phrases.append(buffer[start : m.end()])
        start = m.end()
    rest = buffer[start:]
    while len(rest.encode("utf-8")) > max_bytes:  # no boundary for too long: cut at a space
        head, rest = cut_at_space(rest, max_bytes)
        phrases.append(head)
    return [p for p in phrases if p.strip()], rest


def cut_at_space(text: str, max_bytes: int | None = None) -> tuple[str, str]:
    """Split ``text`` before its last word (looking only at the first ``max_bytes``).

    Text ending in whitespace is returned whole; text with no space is cut at the limit."""
    head = text if max_bytes is None else text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
    if head == text and text[-1:].isspace():
        return text, ""
    cut = max(head.rfind(" "), head.rfind("\t"), head.rfind("\n"))
    if cut <= 0:
        return head, text[len(head) :]
    return text[:cut], text[cut:]


@dataclass
class _Context:
    context_id: str
    settings: pb.ConverseConfig = field(default_factory=pb.ConverseConfig)
    buffer: str = ""
    stream: Stream | None = None  # the engine stream of the current segment
    timer: asyncio.TimerHandle | None = None
    pending: asyncio.Task[None] | None = None  # last queued stream operation (they run in order)
    last_message: float = 0.0  # loop time of the last message for this context (idle timeout)
    text_queued: int = 0  # UTF-8 bytes said to its streams whose line has not begun speaking


class ConverseSession:
    """One Converse call: reads requests, keeps contexts, merges their events into one output."""

    def __init__(self, engine: EngineService, store: ConfigStore, late_audio: LateAudio | None = None) -> None:
        self.engine = engine
        self.store = store
        self.late_audio = late_audio or LateAudio()  # the servicer's: audio this edge took after it was due
        self.limits = store.config.server  # the limits this call started with
        self.contexts: dict[str, _Context] = {}
        # Responses for the client. Not an asyncio.Queue bound: pumps must never block on a
        # client; the bytes of audio waiting are counted instead (max_output_buffer_bytes).
        self.out: asyncio.Queue[pb.SpeakResponse | BaseException | None] = asyncio.Queue()
        self.out_bytes = 0
        self.failure: BaseException | None = None  # a limit reached: ends the call before queued output
        self.line_bytes: dict[Stream, deque[int]] = {}  # per stream: bytes of each line not yet begun
        self.streams: set[Stream] = set()  # every engine stream opened by this call
        self.pumps: set[asyncio.Task[None]] = set()
        self.ops: set[asyncio.Task[None]] = set()  # queued say/end_input calls
        self.reader: asyncio.Task[None] | None = None
        self.reader_done = False
        self._last_pump: dict[str, asyncio.Task[None]] = {}  # per context, for segment order
        self.sweeper: asyncio.Task[None] | None = None

    async def run(self, requests: AsyncIterator[pb.ConverseRequest]) -> AsyncIterator[pb.SpeakResponse]:
        if not self.reader_done:  # (a call that arrives while the daemon drains reads nothing)
            self.reader = asyncio.create_task(self._read(requests))
        if self.limits.context_idle_timeout_s > 0:
            self.sweeper = asyncio.create_task(self._close_idle(self.limits.context_idle_timeout_s))
        while True:
            if self.failure is not None:
                raise self.failure
            item = await self.out.get()
            if self.failure is not None:
                raise self.failure
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            if item.HasField("audio"):
                self.out_bytes -= len(item.audio.pcm)
            yield item

    def _emit(self, item: pb.SpeakResponse | BaseException | None) -> None:
        """Queue a response (or the error / end of the call) for the client, within the bound."""
        if self.failure is not None:
            return
        if isinstance(item, pb.SpeakResponse) and item.HasField("audio"):
            self.out_bytes += len(item.audio.pcm)
            if self.out_bytes > self.limits.max_output_buffer_bytes:
                self._fail(
                    LimitError(
                        f"{self.out_bytes} bytes of audio wait for this client, more than "
                        f"server.max_output_buffer_bytes ({self.limits.max_output_buffer_bytes}): "
                        "it does not read its responses; the call is ended"
                    )
                )
                return
        self.out.put_nowait(item)

    def _fail(self, error: BaseException) -> None:
        """End the call now, ahead of any queued output, and free its slots."""
        if self.failure is None:
            self.failure = error
            self.close_all_streams()
            self.out.put_nowait(None)  # wakes a consumer waiting on an empty queue

    async def _close_idle(self, timeout_s: float) -> None:
        """Close contexts that received no message for ``timeout_s`` (their speech finishes)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, timeout_s / 4))
            for ctx in list(self.contexts.values()):
                if loop.time() - ctx.last_message >= timeout_s:
                    log.info("Converse context %r idle for %g s: closed", ctx.context_id, timeout_s)
                    try:
                        self._close(ctx)
                    except Exception as e:  # e.g. its character is gone after a reload
                        self._emit(e)

    # -- requests -------------------------------------------------------------------------------

    async def _read(self, requests: AsyncIterator[pb.ConverseRequest]) -> None:
        try:
            async for req in requests:
                self._handle(req)
            for ctx in list(self.contexts.values()):  # half-close: speak what is left, then end
                self._close(ctx)
            self.reader_done = True
            self._maybe_done()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # domain errors end the call with their status (errors.py)
            self._emit(e)

    def _handle(self, req: pb.ConverseRequest) -> None:
        action = req.WhichOneof("action")
        if action is None:  # nothing to do: in particular, no context (and no slot) for it
            return
        cid = convert.check_id("context_id", req.context_id, self.limits.max_id_bytes) or "default"
        ctx = self.contexts.get(cid)
        if ctx is None:
            self._check_context_count(cid)
            ctx = self.contexts[cid] = _Context(cid)
        ctx.last_message = asyncio.get_running_loop().time()
        if action == "config":
            self._configure(ctx, req.config)
        elif action == "text":
            self._check_text_queued(ctx, req.text)
            ctx.buffer += req.text
            self._speak_phrases(ctx)
        elif action == "flush":
            self._speak_all(ctx)
        elif action == "cancel":
            self._cancel(ctx)
        elif action == "close":
            self._close(ctx)

    def _check_context_count(self, cid: str) -> None:
        speaking = {c for c, pump in self._last_pump.items() if not pump.done()}  # closed, still speaking
        live = len(set(self.contexts) | speaking)
        if cid not in speaking and live >= self.limits.max_contexts_per_call:
            raise LimitError(
                f"context {cid!r} would be the {live + 1}th open or speaking context of this call; the limit is "
                f"server.max_contexts_per_call ({self.limits.max_contexts_per_call}): close or cancel one first"
            )

    def _check_text_queued(self, ctx: _Context, text: str) -> None:
        queued = ctx.text_queued + len(ctx.buffer.encode("utf-8")) + len(text.encode("utf-8"))
        if queued > self.limits.max_buffered_text_bytes:
            raise LimitError(
                f"context {ctx.context_id!r} would have {queued} bytes of text waiting to be spoken, more than "
                f"server.max_buffered_text_bytes ({self.limits.max_buffered_text_bytes}): send text no faster "
                "than it is spoken"
            )

    def _configure(self, ctx: _Context, settings: pb.ConverseConfig) -> None:
        config = self.store.config
        convert.check_id("character", settings.character, self.limits.max_id_bytes)
        convert.check_id("request_id", settings.request_id, self.limits.max_id_bytes)
        _, spec = config.resolve(settings.character)  # validate now: errors point at this message
        convert.resolve_format(settings.format, spec)
        convert.resolve_controls(spec, settings.overrides)
        if ctx.stream is not None:  # speech already started: finish this segment, next one is new
            self._speak_all(ctx)
            self._in_order(ctx, ctx.stream.end_input)
            ctx.stream = None
        ctx.settings = settings

    # -- speaking -------------------------------------------------------------------------------

    def _speak_phrases(self, ctx: _Context) -> None:
        phrases, ctx.buffer = split_phrases(ctx.buffer, self.store.config.server.max_text_bytes)
        for phrase in phrases:
            self._say(ctx, phrase)
        if phrases or not ctx.buffer:
            self._cancel_timer(ctx)
        if ctx.buffer.strip() and ctx.timer is None:
            delay_ms = ctx.settings.max_buffer_delay_ms or DEFAULT_DELAY_MS
            ctx.timer = asyncio.get_running_loop().call_later(delay_ms / 1000, self._on_timer, ctx)

    def _on_timer(self, ctx: _Context) -> None:
        ctx.timer = None
        if self.contexts.get(ctx.context_id) is not ctx:
            return
        head, ctx.buffer = cut_at_space(ctx.buffer)
        try:
            self._say(ctx, head)
            self._speak_phrases(ctx)  # re-arms the timer for a remaining last word
        except Exception as e:
            self._emit(e)

    def _speak_all(self, ctx: _Context) -> None:
        self._cancel_timer(ctx)
        text, ctx.buffer = ctx.buffer, ""
        if text.strip():
            self._say(ctx, text)

    def _say(self, ctx: _Context, phrase: str) -> None:
        if not _SPEAKABLE.search(phrase):  # lone punctuation between phrases: nothing to say
            return
        if ctx.stream is None:
            ctx.stream = self._open(ctx)
        stream = ctx.stream
        n = len(phrase.encode("utf-8"))
        ctx.text_queued += n  # until its line begins (its MarkEvent) or the stream ends
        self.line_bytes.setdefault(stream, deque()).append(n)
        self._in_order(ctx, lambda: stream.say(phrase), in_thread=True)

    def _in_order(self, ctx: _Context, op: Callable[[], None], in_thread: bool = False) -> None:
        """Run a stream operation after the context's previous ones. ``say`` runs the frontend
        (a few ms of CPU), so it goes to a worker thread: the event loop keeps serving audio."""
        previous = ctx.pending

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                if in_thread:
                    await asyncio.to_thread(op)
                else:
                    op()
            except Exception as e:  # TextError and friends end the call with their status
                self._emit(e)

        task = ctx.pending = asyncio.create_task(run())
        self.ops.add(task)
        task.add_done_callback(self._op_done)

    def _op_done(self, task: asyncio.Task[None]) -> None:
        self.ops.discard(task)
        self._maybe_done()

    def _open(self, ctx: _Context) -> Stream:
        config = self.store.config
        s = ctx.settings
        character, spec = config.resolve(s.character)
        fmt = convert.resolve_format(s.format, spec)
        controls = convert.resolve_controls(spec, s.overrides)
        request_id = convert.request_id_or_new(s.request_id)
        stream = self.engine.open_stream(character, spec.voice, controls, spec.lexicon, fmt.sample_rate, request_id,
                                         encoding=fmt.encoding)
        self.streams.add(stream)
        start = convert.start_response(fmt, request_id, character, spec.voice, ctx.context_id)
        previous = self._last_pump.get(ctx.context_id)
        pump = asyncio.create_task(self._pump(ctx, stream, fmt, request_id, start, previous))
        self._last_pump[ctx.context_id] = pump
        self.pumps.add(pump)
        pump.add_done_callback(self._pump_done)
        return stream

    async def _pump(
        self,
        ctx: _Context,
        stream: Stream,
        fmt: convert.OutputFormat,
        request_id: str,
        start: pb.SpeakResponse,
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Forward one engine stream's events, tagged with the context, after the previous segment's."""
        if previous is not None:
            await asyncio.wait([previous])
        lines = self.line_bytes.setdefault(stream, deque())
        try:
            started = False
            async for event in stream.events():
                self.late_audio.note(event)
                if not started:
                    self._emit(start)
                    started = True
                if isinstance(event, MarkEvent) and lines:  # one MarkEvent as each line begins
                    ctx.text_queued -= lines.popleft()
                self._emit(convert.event_to_response(event, fmt, request_id, ctx.context_id))
                if isinstance(event, EndEvent):
                    break
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._emit(e)
        finally:
            stream.close()
            self.streams.discard(stream)
            ctx.text_queued -= sum(self.line_bytes.pop(stream, ()))

    def _pump_done(self, task: asyncio.Task[None]) -> None:
        self.pumps.discard(task)
        self._maybe_done()

    def _cancel(self, ctx: _Context) -> None:
        self._cancel_timer(ctx)
        ctx.buffer = ""
        del self.contexts[ctx.context_id]
        if ctx.stream is not None:
            ctx.stream.cancel()
        else:
            self._empty_stream(ctx, pb.END_REASON_CANCELLED)

    def _close(self, ctx: _Context) -> None:
        self._speak_all(ctx)
        del self.contexts[ctx.context_id]
        if ctx.stream is not None:
            self._in_order(ctx, ctx.stream.end_input)
        elif ctx.context_id not in self._last_pump:
            self._empty_stream(ctx, pb.END_REASON_COMPLETED)

    def _empty_stream(self, ctx: _Context, reason: int) -> None:
        """Start + end for a context that ends before it said anything (every context gets both)."""
        character, spec = self.store.config.resolve(ctx.settings.character)
        fmt = convert.resolve_format(ctx.settings.format, spec)
        rid = convert.request_id_or_new(ctx.settings.request_id)
        self._emit(convert.start_response(fmt, rid, character, spec.voice, ctx.context_id))
        end = pb.StreamEnd(reason=reason, total_samples=0, timings=pb.Timings(), request_id=rid)  # type: ignore[arg-type]
        self._emit(pb.SpeakResponse(context_id=ctx.context_id, end=end))

    def _cancel_timer(self, ctx: _Context) -> None:
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None

    def _maybe_done(self) -> None:
        if self.reader_done and not self.pumps and not self.ops and not self.contexts:
            self._emit(None)

    # -- teardown -------------------------------------------------------------------------------

    def end_input(self) -> None:
        """The daemon drains: read no more requests; close every context as a half-close would
        (buffers are spoken; the engine's close fades out what is still speaking after the grace)."""
        if self.reader is not None and not self.reader.done():
            self.reader.cancel()
        for ctx in list(self.contexts.values()):
            try:
                self._close(ctx)
            except Exception as e:
                self._emit(e)
        self.reader_done = True
        self._maybe_done()

    def close_all_streams(self) -> None:
        """The call is over (any reason): free every slot at once."""
        for stream in list(self.streams):
            stream.close()

    async def shutdown(self) -> None:
        for ctx in self.contexts.values():
            self._cancel_timer(ctx)
        tasks = [t for t in (self.reader, self.sweeper, *self.ops, *self.pumps) if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.close_all_streams()
