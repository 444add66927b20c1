"""Engine: the device, one state pool per voice, and the one engine thread that owns them.

Usage (in-process)::

    engine = Engine({"default": load_voice()}, EngineConfig())
    engine.start()
    stream = engine.speak(LineRequest("guard/42", "default", "Halt!", VoiceControls(), {}, 22050, "r1"))
    for event in stream.events_sync(): ...
    engine.close()

Threading: every piece of mutable engine state (requests, pools, arenas) belongs to the engine
thread (``EngineCore``). The methods here run on any thread; they post commands to it and wait
for an answer where they need one (export, import, reset: at most COMMAND_TIMEOUT_S), and
``stats()`` reads the snapshot the engine thread publishes after every round.

Character ids are opaque ("guard/42" is just a string here); the server resolves templates to a
voice, controls and lexicon. A character speaks one stream at a time; what a second stream for
it does is its ``BusyPolicy`` (queue with bounds, interrupt, reject).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Protocol, TypeVar

import torch

from npc_voice.contracts import CONTROL_RANGES
from npc_voice.engine.allocator import keep_freed_memory
from npc_voice.engine.api import (
    SAMPLE_RATES,
    BusyPolicy,
    EngineConfig,
    EngineError,
    EngineStats,
    LineRequest,
    StateFormatError,
    UnknownVoiceError,
    VoiceControls,
)
from npc_voice.engine.arena import CondArena
from npc_voice.engine.core import EngineCore, VoiceRuntime, resolve_max_batch, resolve_step_threads
from npc_voice.engine.device import make_step, resolve_device
from npc_voice.engine.pool import StatePool
from npc_voice.engine.request import Request
from npc_voice.engine.split import RowSplitter
from npc_voice.engine.statefile import check_state_values, decode_state, encode_state
from npc_voice.engine.stream import Stream
from npc_voice.model.api import VoiceModel

log = logging.getLogger(__name__)
T = TypeVar("T")

COMMAND_TIMEOUT_S = 30.0  # export/import/reset wait at most this long for the engine thread
CLOSE_FADE_WAIT_S = 2.0  # close() lets open streams fade out for at most this long
FAILED_TICKS_BEFORE_GIVING_UP = 3  # unexpected tick errors in a row before running streams fail


class EngineService(Protocol):
    """What the server uses of an engine: ``Engine`` (a thread in this process) and
    ``ProcessEngine`` (npc_voice.engine.process: the engine in its own process) both are one."""

    voices: dict[str, VoiceModel]

    def start(self) -> None: ...

    def close(self) -> None: ...

    def open_stream(self, character: str, voice: str, controls: VoiceControls, lexicon: Mapping[str, str],
                    sample_rate: int, request_id: str, busy: BusyPolicy = BusyPolicy.QUEUE,
                    wait_s: float | None = None, encoding: str | None = None) -> Stream: ...

    def cancel_character(self, character: str, request_id: str = "") -> tuple[bool, int]: ...

    def reset_character(self, character: str) -> None: ...

    def export_character(self, character: str, voice: str = "") -> bytes: ...

    def import_character(self, character: str, data: bytes, voice: str = "") -> None: ...

    def add_voices(self, voices: Mapping[str, VoiceModel]) -> None: ...

    def stats(self) -> EngineStats: ...


class Engine:
    def __init__(self, voices: Mapping[str, VoiceModel], config: EngineConfig) -> None:
        check_config(config)
        if not voices:
            raise ValueError("the engine needs at least one voice")
        self.config = config
        self.device = resolve_device(config.device)
        self.splitter: RowSplitter | None = None
        if self.device.type == "cpu":
            keep_freed_memory()  # no page faults on every step's FFT buffers (allocator.py)
            self.splitter = RowSplitter(resolve_step_threads(config, self.device))
        runtimes = {name: self._runtime(name, model) for name, model in voices.items()}
        self.voices = dict(voices)
        self.core = EngineCore(runtimes, config, self.device)
        self._thread: threading.Thread | None = None
        self._running = False
        self._ready = threading.Event()

    def _runtime(self, name: str, model: VoiceModel) -> VoiceRuntime:
        """A voice's pool, step and conditioning arena on this engine's device."""
        if torch.device(model.device).type != self.device.type:
            raise ValueError(f"voice {name!r} is on {model.device} but the engine runs on {self.device}; "
                             f"load voices with device={self.device.type!r}")
        config = self.config
        spec = model.state_spec()
        state_bytes = sum(s.nbytes for s in spec.values())
        host_states = min(config.host_cache_characters, int(config.host_cache_mb * 1e6 // max(1, state_bytes)))
        pool = StatePool(spec, config.slots, self.device, host_states)
        silence = model.silence_cond().to(self.device, torch.float32)
        step = make_step(model, pool.tensors, self.device, resolve_max_batch(config, self.device), self.splitter)
        arena = CondArena(config.frames_per_tick, model.d_cond, self.device)
        return VoiceRuntime(name, model, pool, silence, step, arena)

    def add_voices(self, voices: Mapping[str, VoiceModel]) -> None:
        """Add or replace voices while running (configuration hot reload). A name the engine
        already has with the same model object is left alone. A name with a different model is
        swapped: streams speaking with the old model finish on it (its pool is dropped when the
        last one ends), new lines use the new one, and characters start the new voice from a
        fresh state (an old state means nothing to a different model). Pools are built on the
        caller's thread; the change happens on the engine thread between ticks."""
        changed = {name: model for name, model in voices.items() if self.voices.get(name) is not model}
        if not changed:
            return
        runtimes = {name: self._runtime(name, model) for name, model in changed.items()}
        self._call(lambda: self.core.set_voices(runtimes))
        swapped = sorted(name for name in changed if name in self.voices)
        self.voices.update(changed)
        log.info("engine: voice(s) %s%s", ", ".join(sorted(changed)),
                 f" (replaced: {', '.join(swapped)})" if swapped else " added")

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread; returns once it has warmed up (prepare + steps per voice)."""
        if self._thread is not None:
            return
        if self.device.type == "cpu":
            torch.set_num_threads(self.config.threads or default_threads())
        state_bytes = sum(s.nbytes for vr in self.core.voices.values() for s in vr.pool.spec.values())
        host = sum(vr.pool.host_capacity for vr in self.core.voices.values())
        log.info("engine on %s: %d voices, %d slots, K=%d, %d state bytes per character (all voices), %d threads, "
                 "%d stepping a call, up to %d rows a call; idle states in host memory: up to %d characters (%.2f GB)",
                 self.device, len(self.voices), self.config.slots, self.config.frames_per_tick, state_bytes,
                 torch.get_num_threads(), self.splitter.threads if self.splitter else 1, self.core.max_batch,
                 host, host * state_bytes / len(self.voices) / 1e9)
        self._running = True
        self._thread = threading.Thread(target=self._run, name="npc-voice-engine", daemon=True)
        self._thread.start()
        self._ready.wait()  # warm-up done: the first request pays no lazy initialisation

    def close(self) -> None:
        """Stop the engine thread; open streams end "cancelled" (faded out within CLOSE_FADE_WAIT_S)."""
        if self._thread is not None and self._running:
            try:
                self._call(self.core.stop_all)
            except Exception:  # noqa: BLE001  (closing anyway)
                log.exception("engine close: stopping streams failed")
            deadline = time.monotonic() + CLOSE_FADE_WAIT_S
            while time.monotonic() < deadline and (self.core.snapshot.active_streams or
                                                   self.core.snapshot.streams_waiting):
                time.sleep(0.005)
        self._running = False
        if self._thread is not None:
            self.core.wake()
            self._thread.join()
            self._thread = None
        self.core.shutdown()  # the thread is gone: this thread owns what is left
        if self.splitter is not None:
            self.splitter.close()

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        core = self.core
        try:
            core.warm_up()
        except Exception:  # not fatal: the first request pays for initialisation instead
            log.exception("engine warm-up failed")
        core.publish()
        self._ready.set()
        delay: float | None = 0.0
        failed_ticks = 0
        while self._running:
            core.wait(delay)
            round_start = time.perf_counter()
            core.run_commands()
            if not self._running:
                break
            try:
                delay = core.tick()
                failed_ticks = 0
            except Exception:  # a bug, not a fault of one request (those are handled in the tick)
                failed_ticks += 1
                log.exception("engine tick failed (%d in a row)", failed_ticks)
                if failed_ticks >= FAILED_TICKS_BEFORE_GIVING_UP:
                    core.fail_running(EngineError("internal engine error (see the daemon log)"))
                delay = min(1.0, 0.01 * 2**failed_ticks)
            core.publish()
            core.learn_round(time.perf_counter() - round_start)

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
        """A stream for ``character``; lines come with ``say``. Raises UnknownVoiceError, or
        ValueError for a bad rate or control value. Admission happens on the engine thread:
        ``events()`` raises CapacityError (BusyError for a busy character) if the stream was
        refused. ``wait_s`` bounds the wait for admission (default max_queue_wait_s). ``encoding``
        ("s16le" or "f32le"): AudioEvents also carry the samples encoded for the wire (``data``),
        converted once per batch on the engine thread."""
        if self._thread is None or not self._running:
            raise EngineError("the engine is not running")
        check_open(self.voices, voice, sample_rate, controls, encoding)
        stream = Stream(character=character, voice=voice, controls=controls, lexicon=lexicon,
                        sample_rate=sample_rate, request_id=request_id)
        self.attach(stream, busy, wait_s, encoding)
        return stream

    def attach(self, stream: Stream, busy: BusyPolicy = BusyPolicy.QUEUE, wait_s: float | None = None,
               encoding: str | None = None, opened_at: float | None = None) -> None:
        """Open a handle the caller built (``open_stream`` does; the engine process opens its
        relay handles this way): bind it to this engine and post its open command. ``opened_at``
        (monotonic, default now) is when the caller asked: the wait for admission counts from it."""
        wait = self.config.max_queue_wait_s if wait_s is None else wait_s
        req = Request(stream, stream.character, stream.voice, stream.controls, dict(stream.lexicon),
                      stream.sample_rate, stream.request_id, busy,
                      time.monotonic() if opened_at is None else opened_at, wait, encoding)
        stream.bind(self.core, req, self.config.max_line_symbols, self.voices[stream.voice])
        self.core.post(self.core.cmd_open, req)

    def speak(self, req: LineRequest) -> Stream:
        """One line: open_stream + say + end_input. TextError is raised here, before any audio."""
        return speak_line(self, req)

    def cancel_character(self, character: str, request_id: str = "") -> tuple[bool, int]:
        """Cancel the character's stream(s) (only ``request_id``'s if given): (was speaking,
        samples the cancelled stream produced, fade included). Waits for the fade frame."""
        targets = self._call(lambda: self.core.cancel_character(character, request_id))
        if not targets:
            return False, 0
        end = targets[0].stream.wait_ended(COMMAND_TIMEOUT_S)
        return True, end.total_samples if end is not None else 0

    # ---- character state (runs on the engine thread, between ticks) -----------------------

    def reset_character(self, character: str) -> None:
        """Forget the character's state: its next line starts from a fresh state."""
        def run() -> None:
            for vr in self.core.voices.values():
                vr.pool.forget(character)
        self._call(run)

    def export_character(self, character: str, voice: str = "") -> bytes:
        """The character's state as versioned bytes. A character that has no state yet gets the
        fresh state of ``voice`` (EngineError if no voice is given then)."""
        def run() -> bytes:
            for vr in self.core.voices.values():
                state = vr.pool.read(character)
                if state is not None:
                    return encode_state(vr.model.version, state)
            if not voice:
                raise EngineError(f"character {character!r} has no voice state yet (it has not spoken)")
            if voice not in self.core.voices:
                raise UnknownVoiceError(f"unknown voice {voice!r}; this daemon has {sorted(self.voices)}")
            vr = self.core.voices[voice]
            fresh = {name: torch.zeros(s.shape, dtype=s.dtype) for name, s in vr.pool.spec.items()}
            return encode_state(vr.model.version, fresh)
        return self._call(run)

    def import_character(self, character: str, data: bytes, voice: str = "") -> None:
        """Replace the character's state with exported bytes. ``voice``: the voice the character
        speaks with (its configuration); the state must belong to it. Without it, the voice whose
        version the bytes name. StateFormatError if the bytes do not fit, or hold non-finite or
        absurd values. Takes effect from the next frame it speaks."""
        version, state = decode_state(data)
        check_state_values(state)

        def run() -> None:
            voices = self.core.voices
            if voice:
                if voice not in voices:
                    raise UnknownVoiceError(f"unknown voice {voice!r}; this daemon has {sorted(self.voices)}")
                target = voices[voice]
                if target.model.version != version:
                    raise StateFormatError(f"the state belongs to voice version {version!r}; {character!r} speaks "
                                           f"with voice {voice!r}, version {target.model.version!r}")
            else:
                matches = [vr for vr in voices.values() if vr.model.version == version]
                if not matches:
                    known = sorted({vr.model.version for vr in voices.values()})
                    raise StateFormatError(f"the state belongs to voice version {version!r}; this daemon runs {known}")
                target = matches[0]
            try:
                target.pool.check(state)
            except ValueError as e:
                raise StateFormatError(f"the state does not fit voice {target.name!r}: {e}") from e
            for vr in voices.values():
                if vr is not target:
                    vr.pool.forget(character)
            target.pool.write(character, state)
        self._call(run)

    def stats(self) -> EngineStats:
        """The snapshot the engine thread published after its last round (never blocks)."""
        return self.core.snapshot

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the engine thread between ticks (inline when the thread is not running)."""
        if self._thread is None or not self._running or threading.current_thread() is self._thread:
            result = fn()
            self.core.publish()
            return result
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to the caller
                future.set_exception(e)
        self.core.post(run)
        return future.result(COMMAND_TIMEOUT_S)


def speak_line(engine: EngineService, req: LineRequest) -> Stream:
    """One line on ``engine``: open_stream + say + end_input (TextError raised before any audio)."""
    stream = engine.open_stream(req.character, req.voice, req.controls, req.lexicon, req.sample_rate,
                                req.request_id, req.busy)
    try:
        stream.say(req.text)
    except BaseException:
        stream.close()
        raise
    stream.end_input()
    return stream


def default_threads() -> int:
    """Half the cores for the engine's intra-op threads: its ops are small (B * K rows), and the
    gRPC event loop and the line encoder (on the callers' threads) need the other half. On the
    2-core VM one thread served 32 streams at 27x real time against 24x with two (bench/README.md)."""
    return max(1, (os.cpu_count() or 2) // 2)


def check_config(config: EngineConfig) -> None:
    if config.slots < 2:
        raise ValueError(f"EngineConfig.slots must be >= 2 (slot 0 is scratch), got {config.slots}")
    if config.frames_per_tick < 1:
        raise ValueError(f"EngineConfig.frames_per_tick must be >= 1, got {config.frames_per_tick}")
    if config.max_queue_wait_s < 0:
        raise ValueError(f"EngineConfig.max_queue_wait_s must be >= 0, got {config.max_queue_wait_s}")
    if not config.host_cache_mb >= 0:
        raise ValueError(f"EngineConfig.host_cache_mb must be >= 0, got {config.host_cache_mb}")
    if not config.prepare_cache_mb >= 0:
        raise ValueError(f"EngineConfig.prepare_cache_mb must be >= 0, got {config.prepare_cache_mb}")
    if config.lookahead_ms < 0:
        raise ValueError(f"EngineConfig.lookahead_ms must be >= 0, got {config.lookahead_ms}")
    if config.host_cache_characters < 0 or config.threads < 0 or config.max_batch < 0 or config.max_line_symbols < 0:
        raise ValueError(f"EngineConfig counts must be >= 0: {config}")


def check_open(voices: Mapping[str, object], voice: str, sample_rate: int, controls: VoiceControls,
               encoding: str | None) -> None:
    """What ``open_stream`` refuses before anything is queued (UnknownVoiceError, ValueError)."""
    if voice not in voices:
        raise UnknownVoiceError(f"unknown voice {voice!r}; this daemon has {sorted(voices)}")
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"sample rate {sample_rate} Hz is not supported; use one of {list(SAMPLE_RATES)}")
    _check_controls(controls)
    if encoding not in (None, "s16le", "f32le"):
        raise ValueError(f"encoding {encoding!r} is not one of s16le, f32le")


def _check_controls(c: VoiceControls) -> None:
    """Each control inside its value range (npc_voice.contracts.CONTROL_RANGES)."""
    for name, r in CONTROL_RANGES.items():
        value, (lo, hi) = getattr(c, name), r.value
        if not lo <= value <= hi:  # also catches NaN
            raise ValueError(f"voice control {name}={value} is outside [{lo}, {hi}]")
