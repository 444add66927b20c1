"""The engine in its own process, so that the engine thread and the gRPC edge stop sharing a GIL.

Why: on CPU the engine thread runs hundreds of short native ops per tick and gives the GIL back
around each one; in the daemon's process the event loop, gRPC's threads and the line encoder
take it in between, and the engine waits to get it back. Measured on the 2-core VM at 48
continuous streams (bench/README.md "Engine in its own process"): the engine thread was never
idle yet got 0.67 CPU-s per second, the daemon 1.1 cores of 2, and the engine made 30x real
time, against 64 streams at 1.5x real time in the same engine with no gRPC beside it.

Shape::

    daemon process                                   engine process (spawned)
    ─────────────────────────────────────────        ────────────────────────────────────────
    Stream handles (callers' threads: text,          Engine + EngineCore (the engine thread)
      frontend; the preparer thread: encoder)
                          ──post──> link sender ═══> host reader ──post──> core inbox
    ProcessEngine.stats() <── link reader <════════ host sender <── on_publish: one message per
      pushes events into the handles, wakes           round (every stream's events of the round
      each event loop once per round                  and the stats snapshot)

Ownership stays as in the engine: the engine process's core is owned by its engine thread; in
each process the link's sender thread owns writing the pipe (any thread queues a message) and its
reader thread owns reading it. Handles are registered by id before their open message leaves, and
only the reader thread removes them (when their stream ends). Lines are prepared here, with this
process's copy of the voice, by one preparer thread that batches the lines waiting
(``engine/prepare.py``), and cross as prepared conditioning frames.

If the engine process dies, every open stream fails with EngineUnavailableError (gRPC
UNAVAILABLE), stats report ``serving=False``, and a new engine process starts (backing off
1 s doubling to 30 s); character states held by the dead process are lost.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

import torch

from npc_voice.collector import freeze_after_startup
from npc_voice.contracts import PhonemeInput
from npc_voice.engine.api import (
    BusyPolicy,
    EngineConfig,
    EngineError,
    EngineStats,
    EngineUnavailableError,
    LineRequest,
    VoiceControls,
)
from npc_voice.engine.device import resolve_device
from npc_voice.engine.engine import (
    CLOSE_FADE_WAIT_S,
    COMMAND_TIMEOUT_S,
    Engine,
    check_config,
    check_open,
    default_threads,
    speak_line,
)
from npc_voice.engine.prepare import Preparer
from npc_voice.engine.stream import Event, Stream, Wakeups, wake_loops
from npc_voice.model.api import PreparedLine, VoiceModel

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0  # spawn + imports + voices + warm-up
RESTART_FIRST_S = 1.0  # after the engine process died; doubles per death in a row
RESTART_MAX_S = 30.0
STABLE_S = 60.0  # a process that ran this long resets the restart backoff
SWEEP_S = 1.0  # the host forgets ended relays this often


class Link:
    """One end of the pipe between the processes. ``send`` (any thread) queues a message; the
    sender thread writes everything queued as one pickled batch (one write per engine round);
    the reader thread hands each message it receives to ``handle`` and calls ``on_eof`` once
    when the other side is gone.

    Closing is a half-close: the sender shuts down its direction of the socket (the other side
    reads EOF) and the reader goes on until the other side does the same; a reader at EOF stops
    its sender in turn. The descriptor is closed by whichever of the two threads finishes last,
    never under the other (closing it under a blocked reader was a ``TypeError`` in
    ``multiprocessing`` at every shutdown with lines still speaking, and a reused descriptor)."""

    def __init__(self, conn: Connection, name: str, handle: Callable[[tuple[Any, ...]], None],
                 on_eof: Callable[[], None]) -> None:
        self._conn = conn
        self._handle = handle
        self._on_eof = on_eof
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name=f"{name}-send", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-read", daemon=True)
        self._users = 2  # the sender and the reader: the last to finish closes the connection
        self._users_lock = threading.Lock()

    def start(self) -> None:
        self._sender.start()
        self._reader.start()

    def send(self, message: tuple[Any, ...]) -> None:
        self._queue.put(message)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, then stop writing (the reader stops at the other side's EOF)."""
        self._queue.put(None)
        if self._sender.is_alive() and threading.current_thread() is not self._sender:
            self._sender.join(timeout)

    def join_reader(self, timeout: float) -> None:
        if self._reader.is_alive() and threading.current_thread() is not self._reader:
            self._reader.join(timeout)

    def _send_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            messages = [m for m in batch if m is not None]
            try:
                if messages:
                    self._conn.send_bytes(_dumps(messages))
            except (OSError, ValueError):  # the other side is gone: its reader's EOF says so
                self._done()
                return
            if stop:
                self._shut_write()
                self._done()
                return

    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    data = self._conn.recv_bytes()
                except (EOFError, OSError):
                    return
                for message in pickle.loads(data):
                    try:
                        self._handle(message)
                    except Exception:  # a bug in one message's handling must not stop the link
                        log.exception("engine link: handling a message failed")
        finally:
            try:
                self._on_eof()
            finally:
                self._queue.put(None)  # the other side reads no more: send what is queued, then stop
                self._done()

    def _shut_write(self) -> None:
        """EOF for the other side's reader; this side's reader goes on until the other side's."""
        try:
            fd = os.dup(self._conn.fileno())
        except (OSError, ValueError):  # already closed
            return
        try:
            sock = socket.socket(fileno=fd)  # the pipe is a socket pair (multiprocessing's duplex Pipe)
        except OSError:  # not a socket: the last thread's close ends it
            os.close(fd)
            return
        with sock:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:  # the other side is gone already
                pass

    def _done(self) -> None:
        """One of the two threads is done with the connection; the last one closes it."""
        with self._users_lock:
            self._users -= 1
            last = self._users == 0
        if last:
            try:
                self._conn.close()
            except OSError:
                pass


def _dumps(messages: list[tuple[Any, ...]]) -> bytes:
    """One pickle for the batch (one per engine round: every stream's audio). If a message
    cannot cross (a bug), it is logged and left out, and the rest still go."""
    try:
        return pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        good = []
        for message in messages:
            try:
                pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
                good.append(message)
            except Exception:
                log.exception("engine link: could not send a %r message", message[0])
        return pickle.dumps(good, protocol=pickle.HIGHEST_PROTOCOL)


# ---- the daemon's side --------------------------------------------------------------------


class _Remote:
    """What a Stream handle's commands do here: each becomes one message to the engine process."""

    def __init__(self, owner: ProcessEngine) -> None:
        self._owner = owner

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        fn(*args)

    def cmd_say(self, sid: int, phonemes: PhonemeInput, line: PreparedLine | None, model: object) -> None:
        self._owner.send(("say", sid, phonemes, line, getattr(model, "version", None)))

    def cmd_end_input(self, sid: int) -> None:
        self._owner.send(("end", sid))

    def cmd_cancel(self, sid: int) -> None:
        self._owner.send(("cancel", sid))

    def cmd_close(self, sid: int) -> None:
        self._owner.send(("close", sid))

    def cmd_fail(self, sid: int, error: BaseException) -> None:
        self._owner.send(("fail", sid, error))


class _Child:
    """One engine process and its link; what it tells us goes to ``owner``."""

    def __init__(self, owner: ProcessEngine, generation: int) -> None:
        self.owner = owner
        self.generation = generation
        ctx = multiprocessing.get_context("spawn")  # no fork: torch and our threads do not survive one
        mine, theirs = ctx.Pipe(duplex=True)
        blob = pickle.dumps(dict(owner.voices), protocol=pickle.HIGHEST_PROTOCOL)
        self.process = ctx.Process(target=host_main, name="npc-voice-engine",
                                   args=(theirs, blob, owner.config, logging.getLogger().level), daemon=True)
        self.ready = threading.Event()
        self.error: str | None = None
        self.closing = False  # being stopped on purpose
        self.serving = False  # came up (ready) as far as the daemon knows
        self.dead = False  # its link closed (set by the reader thread before it fails the open streams)
        self.started_at = time.monotonic()
        self.link = Link(mine, "engine-link", self._handle, self._eof)
        self.process.start()
        theirs.close()
        self.link.start()

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "round":
            self.owner._round(message[1], message[2])
        elif kind == "result":
            self.owner._result(message[1], message[2], message[3])
        elif kind == "ready":
            self.owner._snapshot = message[1]
            self.ready.set()
        elif kind == "start_failed":
            self.error = message[1]
            self.ready.set()
        elif kind != "closed":
            log.error("engine link: unknown message %r", kind)

    def _eof(self) -> None:
        self.ready.set()
        self.owner._child_gone(self)


class ProcessEngine:
    """The Engine's interface, with the engine running in a spawned process (see the module doc).
    ``voices`` are loaded here too: this process prepares lines (encoder + durations) on its
    preparer thread, the engine process only steps."""

    def __init__(self, voices: Mapping[str, VoiceModel], config: EngineConfig) -> None:
        check_config(config)
        if not voices:
            raise ValueError("the engine needs at least one voice")
        self.config = config
        self.device = resolve_device(config.device)
        self.voices = dict(voices)
        self._remote = _Remote(self)
        # every stream's lines, batched, on one thread of this process; lines said again from its cache
        self._preparer = Preparer(cache_mb=config.prepare_cache_mb)
        self._ids = itertools.count(1)
        # id -> handle / pending call: added by the caller before its message leaves, removed by
        # the link's reader thread (or by _child_gone, on that same thread)
        self._streams: dict[int, Stream] = {}
        self._calls: dict[int, Future[Any]] = {}
        self._snapshot: EngineStats | None = None
        self._child: _Child | None = None
        self._generation = 0
        self._running = False
        self._stopping = threading.Event()  # close() was called: no more restarts
        self._restarter: threading.Thread | None = None
        self._deaths = 0  # in a row
        self.restarts = 0

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine process; returns once it has warmed up. EngineError if it cannot."""
        if self._running:
            return
        if self.device.type == "cpu":  # this process only prepares lines: small ops
            torch.set_num_threads(self.config.threads or default_threads())
        self._running = True
        try:
            self._spawn()
        except BaseException:
            self._running = False
            raise

    def _spawn(self) -> None:
        self._generation += 1
        child = _Child(self, self._generation)
        self._child = child
        ok = child.ready.wait(START_TIMEOUT_S) and child.error is None and not child.dead
        if not ok:
            why = child.error or (f"it did not start within {START_TIMEOUT_S:.0f} s"
                                  if not child.ready.is_set() else f"it exited (code {child.process.exitcode})")
            child.closing = True
            child.process.kill()
            child.process.join(5.0)
            raise EngineError(f"the engine process failed to start: {why}")
        child.serving = True
        log.info("engine process %d serving (generation %d)", child.process.pid, child.generation)

    def close(self) -> None:
        """Stop the engine process: open streams end "cancelled" (faded out), then it exits.
        A restart in progress stops too (the restarter stops a process it started too late)."""
        self._running = False
        self._stopping.set()
        child = self._child
        if child is not None:
            self._stop_child(child)
        restarter = self._restarter
        if restarter is not None and restarter is not threading.current_thread():
            restarter.join(START_TIMEOUT_S)
        self._fail_all(EngineUnavailableError("the engine has stopped"))  # only if it died on the way
        self._child = None
        self._preparer.close()

    def _stop_child(self, child: _Child) -> None:
        child.closing = True  # no new streams, no restart; commands of open streams still go
        child.link.send(("stop",))
        child.link.join_reader(CLOSE_FADE_WAIT_S + 10.0)  # its last rounds, then EOF
        child.link.close()
        child.process.join(5.0)
        if child.process.is_alive():
            log.warning("engine process %d did not exit; killing it", child.process.pid)
            child.process.kill()
            child.process.join(5.0)

    def __enter__(self) -> ProcessEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The engine process's pid (None while it is not running)."""
        child = self._child
        return child.process.pid if child is not None and child.process.is_alive() else None

    def send(self, message: tuple[Any, ...]) -> None:
        """A stream's command (say, end, cancel, close, fail). With no engine process it is
        dropped: that stream has been failed or ended already, as the Engine drops commands
        once its thread has stopped."""
        child = self._child
        if child is not None and not child.dead:
            child.link.send(message)

    # ---- streams ------------------------------------------------------------------------

    def open_stream(
        self,
        character: str,
        voice: str,
        controls: VoiceControls,
        lexicon: Mapping[str, str],
        sample_rate: int,
        request_id: str,
        busy: BusyPolicy = BusyPolicy.QUEUE,
        wait_s: float | None = None,
        encoding: str | None = None,
    ) -> Stream:
        """As ``Engine.open_stream``; EngineUnavailableError while the engine process restarts."""
        child = self._child
        if child is None or not self._running:
            raise EngineUnavailableError("the engine is not running")
        if not child.serving or child.closing or child.dead:
            raise EngineUnavailableError("the engine process is restarting; try again in a moment")
        check_open(self.voices, voice, sample_rate, controls, encoding)
        stream = Stream(character=character, voice=voice, controls=controls, lexicon=lexicon,
                        sample_rate=sample_rate, request_id=request_id)
        sid = next(self._ids)
        stream.bind(self._remote, sid, self.config.max_line_symbols, self.voices[voice], self._preparer)
        self._streams[sid] = stream
        child.link.send(("open", sid, character, voice, controls, dict(lexicon), sample_rate, request_id,
                         busy, wait_s, encoding, time.monotonic()))
        if child.dead:  # it died while we registered: the reader's failing may have missed this one
            self._streams.pop(sid, None)
            stream.fail(EngineUnavailableError("the engine process exited; the daemon is starting a new one"))
        return stream

    def speak(self, req: LineRequest) -> Stream:
        """One line: open_stream + say + end_input. TextError is raised here, before any audio."""
        return speak_line(self, req)

    def cancel_character(self, character: str, request_id: str = "") -> tuple[bool, int]:
        result: tuple[bool, int] = self._call("cancel_character", character, request_id)
        return result

    def reset_character(self, character: str) -> None:
        self._call("reset_character", character)

    def export_character(self, character: str, voice: str = "") -> bytes:
        data: bytes = self._call("export_character", character, voice)
        return data

    def import_character(self, character: str, data: bytes, voice: str = "") -> None:
        self._call("import_character", character, data, voice)

    def add_voices(self, voices: Mapping[str, VoiceModel]) -> None:
        """As ``Engine.add_voices``: the engine process gets a copy of each changed model."""
        changed = {name: model for name, model in voices.items() if self.voices.get(name) is not model}
        if not changed:
            return
        self._call("add_voices", pickle.dumps(changed, protocol=pickle.HIGHEST_PROTOCOL))
        self.voices.update(changed)

    def stats(self) -> EngineStats:
        """The engine process's last published snapshot (``serving=False`` while it is down), with
        this process's line preparer's counts."""
        snap = self._snapshot
        assert snap is not None, "stats() before start()"
        counts = self._preparer.counts
        child = self._child
        serving = snap.serving and not (child is None or not child.serving or child.closing or child.dead)
        return dataclasses.replace(snap, serving=serving, lines_prepared=counts.lines_prepared,
                                   prepare_cache_hits=counts.cache_hits, prepare_cache_bytes=counts.cache_bytes)

    def _call(self, name: str, *args: Any) -> Any:
        child = self._child
        if child is None or not self._running or child.closing or child.dead:
            raise EngineUnavailableError("the engine is not running (its process may be restarting)")
        cid = next(self._ids)
        future: Future[Any] = Future()
        self._calls[cid] = future
        child.link.send(("call", cid, name, args))
        if child.dead and not future.done():
            future.set_exception(EngineUnavailableError("the engine process exited; the daemon is starting a new one"))
        try:
            return future.result(COMMAND_TIMEOUT_S)
        finally:
            self._calls.pop(cid, None)

    # ---- the link's reader thread ---------------------------------------------------------

    def _round(self, items: list[tuple[int, str, Any]], snapshot: EngineStats) -> None:
        """One engine round: every stream's events, then the snapshot; each event loop woken once."""
        self._snapshot = snapshot
        wakeups: Wakeups = {}
        for sid, kind, payload in items:
            stream = self._streams.get(sid)
            if stream is None:
                continue
            if kind == "push":
                stream.push(payload, wakeups)
                if stream.done:
                    del self._streams[sid]
            elif kind == "opened":
                stream.mark_opened(wakeups)
            else:  # "fail"
                stream.fail(payload)
                del self._streams[sid]
        wake_loops(wakeups)

    def _result(self, cid: int, ok: bool, value: Any) -> None:
        future = self._calls.pop(cid, None)
        if future is None:
            return  # the caller gave up waiting
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def _child_gone(self, child: _Child) -> None:
        """The link to ``child`` closed: at close(), or because the process died."""
        child.dead = True
        if child.closing or not child.serving or not self._running:
            return  # stopped on purpose, or it never came up (_spawn reports that)
        child.process.join(1.0)
        code = child.process.exitcode
        log.error("the engine process %d exited unexpectedly (code %s); failing its %d open stream(s) "
                  "and starting a new one", child.process.pid, code, len(self._streams))
        self._fail_all(EngineUnavailableError(
            f"the engine process exited unexpectedly (code {code}); the daemon is starting a new one"))
        if time.monotonic() - child.started_at > STABLE_S:
            self._deaths = 0
        self._deaths += 1
        self._restarter = threading.Thread(target=self._restart, name="engine-restart", daemon=True)
        self._restarter.start()

    def _restart(self) -> None:
        """After a death: start a new engine process (backing off) until one serves or close()."""
        delay = min(RESTART_MAX_S, RESTART_FIRST_S * 2 ** (self._deaths - 1))
        while not self._stopping.wait(delay):
            try:
                self._spawn()
            except Exception:
                log.exception("could not start a new engine process; trying again in %.0f s", RESTART_MAX_S)
                delay = RESTART_MAX_S
                continue
            if self._stopping.is_set() and self._child is not None:  # close() came while it started
                self._stop_child(self._child)
                return
            self.restarts += 1
            return

    def _fail_all(self, error: EngineError) -> None:
        for sid in list(self._streams):
            stream = self._streams.pop(sid, None)
            if stream is not None:
                stream.fail(error)
        for cid in list(self._calls):
            future = self._calls.pop(cid, None)
            if future is not None and not future.done():
                future.set_exception(error)


# ---- the engine process's side --------------------------------------------------------------


class _Relay(Stream):
    """The engine process's handle for one stream of the daemon: what the engine hands it goes
    into the host's outbox (engine thread), sent at the end of the round. Nobody reads it here:
    it keeps only its outcome (``wait_ended``, ``done``)."""

    def __init__(self, sid: int, outbox: list[tuple[int, str, Any]], **kw: Any) -> None:
        super().__init__(**kw)
        self.sid = sid
        self._outbox = outbox
        self._closed = True  # no consumer in this process: Stream.push keeps only the end

    def push(self, events: list[Event], wakeups: Wakeups | None = None) -> None:
        super().push(events, None)
        self._outbox.append((self.sid, "push", events))

    def mark_opened(self, wakeups: Wakeups) -> None:
        self._outbox.append((self.sid, "opened", None))

    def fail(self, error: BaseException) -> None:
        super().fail(error)
        self._outbox.append((self.sid, "fail", error))


class _Host:
    """Runs in the engine process: an Engine, and the link to the daemon."""

    def __init__(self, conn: Connection, config: EngineConfig) -> None:
        self.config = config
        self.link = Link(conn, "engine-host", self._handle, self._parent_gone)
        self.stop = threading.Event()
        self.outbox: list[tuple[int, str, Any]] = []  # the engine thread's; swapped out per round
        self.relays: dict[int, _Relay] = {}  # the reader thread's
        self.models: dict[str, VoiceModel] = {}  # the reader thread's: voice name -> current model
        self.engine: Engine | None = None
        self._swept = time.monotonic()

    def run(self, blob: bytes) -> None:
        try:
            voices: dict[str, VoiceModel] = pickle.loads(blob)
            self.models = dict(voices)
            engine = Engine(voices, self.config)
            engine.core.on_publish = self._flush
            engine.start()
            self.engine = engine
            freeze_after_startup("engine process")  # no 100+ ms full collections under load (npc_voice/collector.py)
        except Exception as e:
            log.exception("the engine process could not start")
            self.link.start()
            self.link.send(("start_failed", f"{type(e).__name__}: {e}"))
            self.link.close()
            return
        self.link.start()
        self.link.send(("ready", engine.stats()))
        self.stop.wait()
        engine.close()  # fades what still speaks; the last rounds go out through _flush
        self.link.send(("closed",))
        self.link.close()

    def _flush(self, snapshot: EngineStats) -> None:
        """End of an engine round (engine thread): its events and snapshot, one message."""
        items, self.outbox[:] = list(self.outbox), []
        self.link.send(("round", items, snapshot))

    def _parent_gone(self) -> None:
        self.stop.set()

    def _handle(self, message: tuple[Any, ...]) -> None:
        engine = self.engine
        assert engine is not None
        core = engine.core
        kind = message[0]
        if kind == "open":
            _, sid, character, voice, controls, lexicon, rate, request_id, busy, wait_s, encoding, at = message
            relay = _Relay(sid, self.outbox, character=character, voice=voice, controls=controls,
                           lexicon=lexicon, sample_rate=rate, request_id=request_id)
            try:
                engine.attach(relay, busy, wait_s, encoding, at)
            except Exception as e:  # a bug: the caller must hear it, not wait for ever
                log.exception("engine process: opening stream %r failed", request_id)
                self.link.send(("round", [(sid, "fail", EngineError(
                    f"internal engine error ({type(e).__name__}; see the daemon log)"))], engine.stats()))
                return
            self.relays[sid] = relay
            self._sweep()
            return
        if kind == "call":
            _, cid, name, args = message
            if name == "add_voices":  # here, in order with the messages after it
                self._reply(cid, lambda: self._add_voices(args[0]))
            else:  # may wait for a fade: never hold up the other streams' commands
                threading.Thread(target=self._reply, args=(cid, lambda: getattr(engine, name)(*args)),
                                 name=f"engine-call-{name}", daemon=True).start()
            return
        if kind == "stop":
            self.stop.set()
            return
        known = self.relays.get(message[1])
        if known is None:
            return  # ended and forgotten: nothing to do
        relay, req = known, known._token
        if kind == "say":
            _, _, phonemes, line, version = message
            model = self.models.get(relay.voice)
            core.post(core.cmd_say, req, phonemes, line,
                      model if model is not None and model.version == version else None)
        elif kind == "end":
            core.post(core.cmd_end_input, req)
        elif kind == "cancel":
            core.post(core.cmd_cancel, req)
        elif kind == "close":
            core.post(core.cmd_close, req)
            del self.relays[message[1]]
        elif kind == "fail":
            core.post(core.cmd_fail, req, message[2])

    def _add_voices(self, blob: bytes) -> None:
        assert self.engine is not None
        voices: dict[str, VoiceModel] = pickle.loads(blob)
        self.engine.add_voices(voices)
        self.models.update(voices)
        freeze_after_startup("engine process, voices added")

    def _reply(self, cid: int, fn: Callable[[], Any]) -> None:
        try:
            value, ok = fn(), True
        except Exception as e:
            value, ok = e, False
        self.link.send(("result", cid, ok, value))

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept >= SWEEP_S:
            self._swept = now
            for sid in [sid for sid, relay in self.relays.items() if relay.done]:
                del self.relays[sid]


def host_main(conn: Connection, blob: bytes, config: EngineConfig, log_level: int) -> None:
    """The engine process. It ends when the daemon says stop or goes away; signals are the
    daemon's to handle (a terminal's Ctrl-C or a service manager's SIGTERM reach the whole group,
    and the daemon drains before it stops the engine)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level or logging.INFO,
                        format="%(asctime)s %(levelname)s [engine process] %(name)s: %(message)s", force=True)
    _Host(conn, config).run(blob)
