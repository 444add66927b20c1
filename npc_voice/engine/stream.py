"""Stream: the caller's handle on one character speaking one or more lines on one sample clock.

A handle owns nothing of the engine. ``say``, ``end_input``, ``cancel`` and ``close`` may be
called from any thread: they post a command to the engine thread, which applies it to the
stream's Request between ticks. Output events are produced by the engine thread into the
handle's queue and consumed either from asyncio (``events``, woken with
``loop.call_soon_threadsafe``) or from a plain thread (``events_sync``).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import torch

from npc_voice.contracts import PhonemeInput, TextError
from npc_voice.engine.api import AudioEvent, EndEvent, EngineError, MarkEvent, StepError, VoiceControls
from npc_voice.engine.prepare import Preparer
from npc_voice.frontend import text_to_phonemes
from npc_voice.model.api import PreparedLine, VoiceModel

log = logging.getLogger(__name__)

Event = MarkEvent | AudioEvent | EndEvent


class Commands(Protocol):
    """The engine's side of a handle: commands applied on the engine thread between ticks."""

    def post(self, fn: Callable[..., None], *args: Any) -> None: ...

    def cmd_say(self, token: Any, phonemes: PhonemeInput, line: PreparedLine | None, model: object) -> None: ...

    def cmd_end_input(self, token: Any) -> None: ...

    def cmd_cancel(self, token: Any) -> None: ...

    def cmd_close(self, token: Any) -> None: ...

    def cmd_fail(self, token: Any, error: BaseException) -> None: ...


def phonemize(text: str, lexicon: Mapping[str, str]) -> PhonemeInput:
    """The frontend's text -> phonemes (espeak-ng is loaded on the first call, not at import)."""
    return text_to_phonemes(text, lexicon)


_SENTENCE_END = frozenset(".!?")
_CLAUSE_END = frozenset(",;:")


def split_phonemes(p: PhonemeInput, limit: int) -> list[PhonemeInput]:
    """``p`` as consecutive lines of at most ``limit`` symbols, cut after a sentence end if one
    lies in the second half of the window, else after a clause mark, else at a word gap (a word
    longer than the window is cut where it must). Pieces without a word are dropped. The pieces
    speak one after another on the stream's clock, so marks and audio stay continuous; each is
    prepared on its own (prosody restarts at a cut, as at a sentence start)."""
    n = len(p.symbols)
    if n <= limit:
        return [p]
    pieces: list[PhonemeInput] = []
    start = 0
    while n - start > limit:
        cut = _cut_point(p.symbols, start, start + limit)
        pieces.append(_slice(p, start, cut))
        start = cut
    pieces.append(_slice(p, start, n))
    return [q for q in pieces if q.words]


def _cut_point(symbols: tuple[str, ...], start: int, end: int) -> int:
    """Where to end the piece that starts at ``start`` (exclusive index, in (start, end])."""
    for marks in (_SENTENCE_END, _CLAUSE_END, frozenset(" ")):
        for i in range(end - 1, start + (end - start) // 2, -1):
            if symbols[i] in marks:
                return i + 1
    return end


def _slice(p: PhonemeInput, a: int, b: int) -> PhonemeInput:
    word_of = p.word_of[a:b]
    ids = sorted({w for w in word_of if w >= 0})
    index = {w: i for i, w in enumerate(ids)}
    words = tuple(p.words[w] for w in ids)
    return PhonemeInput(" ".join(words), p.symbols[a:b], tuple(index.get(w, -1) for w in word_of),
                        p.visemes[a:b], words)


class Stream:
    """Thread-safe handle. ``events()`` / ``events_sync()`` yield MarkEvent (before the audio of
    its line), AudioEvent and finally one EndEvent; they raise CapacityError when the stream was
    refused (no capacity within ``max_queue_wait_s``, or a busy character by policy), TextError
    for a line the voice cannot speak, or StepError when the daemon failed rendering it."""

    def __init__(
        self,
        *,
        character: str,
        voice: str,
        controls: VoiceControls,
        lexicon: Mapping[str, str],
        sample_rate: int,
        request_id: str,
    ) -> None:
        self.request_id = request_id
        self.character = character
        self.voice = voice
        self.sample_rate = sample_rate
        self.controls = controls
        self.lexicon = dict(lexicon)
        self._engine: Commands | None = None
        self._token: object = None  # the engine's Request; opaque here
        self._max_symbols = 0  # longer lines are split (0: never)
        self._model: VoiceModel | None = None  # prepares lines in this process (see bind)
        self._preparer: Preparer | None = None
        self._cond = threading.Condition()
        # caller side: only to answer say() sensibly; the engine keeps its own record
        self._input_ended = False
        self._stopped = False  # cancel() or close() called
        self._closed = False
        # output side
        self._events: deque[Event] = deque()
        self._error: BaseException | None = None
        self._finished = False  # EndEvent queued or error set: nothing more will come
        self._ended = threading.Event()
        self._end: EndEvent | None = None
        self._waiters: list[Waiter] = []  # (loop, event) of each events() consumer
        self._opened = False  # the engine has taken the stream in (queued or admitted)

    def bind(self, engine: Commands, token: object, max_symbols: int = 0, model: VoiceModel | None = None,
             preparer: Preparer | None = None) -> None:
        """Called once by the engine that opened the stream. ``model``: the voice's model, to
        prepare lines (encoder + durations) in ``say``, before they reach the engine's thread,
        which then only steps: on ``preparer``'s thread (batched with other streams' lines) when
        given, else on the caller's."""
        self._engine, self._token, self._max_symbols, self._model = engine, token, max_symbols, model
        self._preparer = preparer

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._engine is not None, "stream not opened by an engine"
        self._engine.post(fn, self._token, *args)

    # ---- caller side -------------------------------------------------------------------

    def say(self, text: str) -> None:
        """Queue one line. Raises TextError (from the frontend) at once for text that cannot
        be spoken; ignored once the stream was cancelled or closed. A line longer than the
        engine's ``max_line_symbols`` goes as several consecutive lines, so that preparing it
        never holds up a tick for long."""
        try:
            phonemes = phonemize(text, self.lexicon)
            pieces = split_phonemes(phonemes, self._max_symbols) if self._max_symbols else [phonemes]
            model = self._model
            if self._stopped or self._finished:  # refused or cancelled meanwhile: no encoder for nothing
                return
            lines = self._prepare(model, pieces) if model is not None else [None] * len(pieces)
        except (TextError, StepError) as e:  # the engine ends the stream "failed" with it; the caller gets it now
            if self._engine is not None:
                self._post(self._engine.cmd_fail, e)
            raise
        with self._cond:
            if self._stopped or self._finished:
                return
            if self._input_ended:
                raise EngineError(f"stream {self.request_id!r}: say() after end_input()")
        assert self._engine is not None
        for piece, line in zip(pieces, lines, strict=True):
            self._post(self._engine.cmd_say, piece, line, model)

    def _prepare(self, model: VoiceModel, pieces: list[PhonemeInput]) -> list[PreparedLine | None]:
        """Encoder + durations (read-only weights; safe beside the engine's step on another thread)."""
        try:
            if self._preparer is not None:
                return list(self._preparer.prepare(model, pieces, self.controls.speed))
            with torch.inference_mode():
                return [model.prepare(p, speed=self.controls.speed) for p in pieces]
        except TextError:
            raise
        except Exception as e:
            log.exception("stream %r: preparing a line failed", self.request_id)
            raise StepError(f"the daemon failed to prepare this line ({type(e).__name__}; see its log)") from e

    def end_input(self) -> None:
        """No more lines: the stream ends "completed" after the last queued line."""
        with self._cond:
            if self._input_ended:
                return
            self._input_ended = True
        assert self._engine is not None
        self._post(self._engine.cmd_end_input)

    def cancel(self) -> None:
        """Fade out (~10 ms) at the next frame and end "cancelled"; queued lines are dropped."""
        with self._cond:
            if self._finished or self._stopped:
                return
            self._stopped = True
        assert self._engine is not None
        self._post(self._engine.cmd_cancel)

    def close(self) -> None:
        """The consumer is gone: the engine frees the slot at its next command round; no more
        events. Idempotent; never blocks on the engine."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopped = True
            self._events.clear()
            self._cond.notify_all()
            waiters = list(self._waiters)
        wake_loops(group_waiters(waiters))  # a consumer waiting in events() sees the end
        if self._engine is not None:
            self._post(self._engine.cmd_close)

    @property
    def done(self) -> bool:
        """True once the stream has ended (EndEvent queued) or failed."""
        return self._ended.is_set()

    def wait_ended(self, timeout: float | None = None) -> EndEvent | None:
        """Block until the stream ends; its EndEvent, or None on timeout or failure."""
        self._ended.wait(timeout)
        return self._end

    @contextmanager
    def _waiter(self) -> Iterator[asyncio.Event]:
        """An asyncio.Event the engine sets when something arrives for this handle (registered
        while the block runs; the engine wakes each event loop once per round)."""
        wake = asyncio.Event()
        waiter = (asyncio.get_running_loop(), wake)
        with self._cond:
            self._waiters.append(waiter)
        try:
            yield wake
        finally:
            with self._cond:
                self._waiters.remove(waiter)

    async def events(self) -> AsyncIterator[Event]:
        with self._waiter() as wake:
            while True:
                item = self._next()
                if item is None:
                    wake.clear()
                    item = self._next()  # an event may have landed before clear()
                    if item is None:
                        await wake.wait()
                        continue
                if item is _DONE:
                    return
                assert not isinstance(item, _Done)
                yield item
                if isinstance(item, EndEvent):
                    return

    def events_sync(self, timeout: float | None = None) -> Iterator[Event]:
        """Blocking iterator; raises TimeoutError when no event arrives within ``timeout`` s."""
        while True:
            with self._cond:
                if not self._cond.wait_for(self._ready_locked, timeout):
                    raise TimeoutError(f"stream {self.request_id!r}: no event within {timeout} s")
                item = self._next_locked()
            if item is _DONE:
                return
            assert item is not None and not isinstance(item, _Done)
            yield item
            if isinstance(item, EndEvent):
                return

    # ---- engine side (called on the engine thread) ------------------------------------------

    def push(self, events: list[Event], wakeups: Wakeups | None = None) -> None:
        """Queue events for the consumer. Asyncio consumers are woken at once, or, when
        ``wakeups`` is given, collected there so that one ``wake_loops`` call per tick wakes
        each event loop once (one self-pipe write per loop instead of one per stream)."""
        if not events:
            return
        last = events[-1]
        is_end = isinstance(last, EndEvent)
        with self._cond:
            if self._finished:
                return
            if is_end:
                assert isinstance(last, EndEvent)
                self._finished = True
                self._end = last
            if self._closed:  # nobody reads: keep only the outcome (wait_ended)
                waiters: list[Waiter] = []
            else:
                self._events.extend(events)
                self._cond.notify_all()
                waiters = list(self._waiters)
        if wakeups is None:
            wake_loops(group_waiters(waiters))
        else:
            for loop, wake in waiters:
                wakeups.setdefault(loop, []).append(wake)
        if is_end:
            self._ended.set()

    async def opened(self) -> None:
        """Wait until the engine has taken the stream in (queued for admission, or admitted), or
        raise why it refused it at once (BusyError, ...). Lets a caller skip the frontend and
        encoder for a line that would be refused anyway."""
        with self._waiter() as wake:
            while True:
                with self._cond:
                    if self._error is not None:
                        raise self._error
                    if self._opened or self._finished or self._closed:
                        return
                    wake.clear()
                await wake.wait()

    def mark_opened(self, wakeups: Wakeups) -> None:
        """Engine side: the stream is queued or admitted (wakes ``opened``)."""
        with self._cond:
            self._opened = True
            waiters = list(self._waiters)
        for loop, wake in waiters:
            wakeups.setdefault(loop, []).append(wake)

    def fail(self, error: BaseException) -> None:
        with self._cond:
            if self._finished:
                return
            self._error = error
            self._finished = True
            self._cond.notify_all()
            waiters = list(self._waiters)
        wake_loops(group_waiters(waiters))
        self._ended.set()

    # ---- internals ----------------------------------------------------------------------

    def _next(self) -> Event | _Done | None:
        with self._cond:
            return self._next_locked()

    def _ready_locked(self) -> bool:
        return bool(self._events) or self._error is not None or self._finished or self._closed

    def _next_locked(self) -> Event | _Done | None:
        if self._events:
            return self._events.popleft()
        if self._error is not None:
            raise self._error
        if self._finished or self._closed:
            return _DONE
        return None


Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]
Wakeups = dict[asyncio.AbstractEventLoop, list[asyncio.Event]]


def group_waiters(waiters: list[Waiter]) -> Wakeups:
    out: Wakeups = {}
    for loop, wake in waiters:
        out.setdefault(loop, []).append(wake)
    return out


def wake_loops(wakeups: Wakeups) -> None:
    """Set the given asyncio events, one thread-safe call per event loop."""
    for loop, events in wakeups.items():
        try:
            loop.call_soon_threadsafe(_set_all, events)
        except RuntimeError:  # loop closed: nobody is listening any more
            pass


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()


class _Done:
    """Sentinel type: the stream has nothing more to give."""


_DONE = _Done()
