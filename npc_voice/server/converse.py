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
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from npc_voice.engine.api import EndEvent, Engine, Stream
from npc_voice.server import convert
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


class ConverseSession:
    """One Converse call: reads requests, keeps contexts, merges their events into one output."""

    def __init__(self, engine: Engine, store: ConfigStore) -> None:
        self.engine = engine
        self.store = store
        self.contexts: dict[str, _Context] = {}
        self.out: asyncio.Queue[pb.SpeakResponse | BaseException | None] = asyncio.Queue()
        self.streams: set[Stream] = set()  # every engine stream opened by this call
        self.pumps: set[asyncio.Task[None]] = set()
        self.ops: set[asyncio.Task[None]] = set()  # queued say/end_input calls
        self.reader: asyncio.Task[None] | None = None
        self.reader_done = False
        self._last_pump: dict[str, asyncio.Task[None]] = {}  # per context, for segment order

    async def run(self, requests: AsyncIterator[pb.ConverseRequest]) -> AsyncIterator[pb.SpeakResponse]:
        self.reader = asyncio.create_task(self._read(requests))
        while True:
            item = await self.out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

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
            self.out.put_nowait(e)

    def _handle(self, req: pb.ConverseRequest) -> None:
        cid = req.context_id or "default"
        action = req.WhichOneof("action")
        ctx = self.contexts.get(cid)
        if ctx is None:
            ctx = self.contexts[cid] = _Context(cid)
        if action == "config":
            self._configure(ctx, req.config)
        elif action == "text":
            ctx.buffer += req.text
            self._speak_phrases(ctx)
        elif action == "flush":
            self._speak_all(ctx)
        elif action == "cancel":
            self._cancel(ctx)
        elif action == "close":
            self._close(ctx)

    def _configure(self, ctx: _Context, settings: pb.ConverseConfig) -> None:
        config = self.store.config
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
            self.out.put_nowait(e)

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
                self.out.put_nowait(e)

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
        stream = self.engine.open_stream(character, spec.voice, controls, spec.lexicon, fmt.sample_rate, request_id)
        self.streams.add(stream)
        start = convert.start_response(fmt, request_id, character, spec.voice, ctx.context_id)
        previous = self._last_pump.get(ctx.context_id)
        pump = asyncio.create_task(self._pump(ctx.context_id, stream, fmt, request_id, start, previous))
        self._last_pump[ctx.context_id] = pump
        self.pumps.add(pump)
        pump.add_done_callback(self._pump_done)
        return stream

    async def _pump(
        self,
        context_id: str,
        stream: Stream,
        fmt: convert.OutputFormat,
        request_id: str,
        start: pb.SpeakResponse,
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Forward one engine stream's events, tagged with the context, after the previous segment's."""
        if previous is not None:
            await asyncio.wait([previous])
        try:
            started = False
            async for event in stream.events():
                if not started:
                    self.out.put_nowait(start)
                    started = True
                self.out.put_nowait(convert.event_to_response(event, fmt, request_id, context_id))
                if isinstance(event, EndEvent):
                    break
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.out.put_nowait(e)
        finally:
            stream.close()
            self.streams.discard(stream)

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
        self.out.put_nowait(convert.start_response(fmt, rid, character, spec.voice, ctx.context_id))
        end = pb.StreamEnd(reason=reason, total_samples=0, timings=pb.Timings(), request_id=rid)  # type: ignore[arg-type]
        self.out.put_nowait(pb.SpeakResponse(context_id=ctx.context_id, end=end))

    def _cancel_timer(self, ctx: _Context) -> None:
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None

    def _maybe_done(self) -> None:
        if self.reader_done and not self.pumps and not self.ops and not self.contexts:
            self.out.put_nowait(None)

    # -- teardown -------------------------------------------------------------------------------

    def close_all_streams(self) -> None:
        """The call is over (any reason): free every slot at once."""
        for stream in list(self.streams):
            stream.close()

    async def shutdown(self) -> None:
        for ctx in self.contexts.values():
            self._cancel_timer(ctx)
        tasks = [t for t in (self.reader, *self.ops, *self.pumps) if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.close_all_streams()
