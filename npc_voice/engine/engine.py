"""Engine: owns the device, one state pool per voice, and the engine thread running the scheduler.

Usage (in-process)::

    engine = Engine({"default": load_voice()}, EngineConfig())
    engine.start()
    stream = engine.speak(LineRequest("guard/42", "default", "Halt!", VoiceControls(), {}, 22050, "r1"))
    for event in stream.events_sync(): ...
    engine.close()

Character ids are opaque ("guard/42" is just a string here); the server resolves templates to a
voice, controls and lexicon. A character has at most one active stream: a second stream for it
waits behind the first (bounded by ``max_queue_wait_s`` only while the first is still taking
input, since a finished line ends by itself).
"""
from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TypeVar

import torch

from npc_voice.engine.api import (
    SAMPLE_RATES,
    EngineConfig,
    EngineError,
    EngineStats,
    LineRequest,
    StateFormatError,
    UnknownVoiceError,
    VoiceControls,
)
from npc_voice.engine.arena import CondArena
from npc_voice.engine.device import make_step, resolve_device
from npc_voice.engine.pool import StatePool
from npc_voice.engine.scheduler import Scheduler, VoiceRuntime
from npc_voice.engine.statefile import decode_state, encode_state
from npc_voice.engine.stream import Stream
from npc_voice.model.api import VoiceModel

log = logging.getLogger(__name__)
T = TypeVar("T")

COMMAND_TIMEOUT_S = 30.0  # export/import/reset wait at most this long for the engine thread
CLOSE_FADE_WAIT_S = 2.0  # close() lets open streams fade out for at most this long


class Engine:
    def __init__(self, voices: Mapping[str, VoiceModel], config: EngineConfig) -> None:
        _check_config(config)
        if not voices:
            raise ValueError("the engine needs at least one voice")
        self.config = config
        self.device = resolve_device(config.device)
        runtimes = {name: self._runtime(name, model) for name, model in voices.items()}
        self.voices = dict(voices)
        self.scheduler = Scheduler(runtimes, config, self.device)
        self._thread: threading.Thread | None = None
        self._running = False
        self._ready = threading.Event()

    def _runtime(self, name: str, model: VoiceModel) -> VoiceRuntime:
        """A voice's pool, step and conditioning arena on this engine's device."""
        if torch.device(model.device).type != self.device.type:
            raise ValueError(f"voice {name!r} is on {model.device} but the engine runs on {self.device}; "
                             f"load voices with device={self.device.type!r}")
        config = self.config
        pool = StatePool(model.state_spec(), config.slots, self.device, config.host_cache_characters)
        silence = model.silence_cond().to(self.device, torch.float32)
        step = make_step(model, pool.tensors, self.device, config.max_batch or config.slots - 1)
        arena = CondArena(config.frames_per_tick, model.d_cond, self.device)
        return VoiceRuntime(name, model, pool, silence, step, arena)

    def add_voices(self, voices: Mapping[str, VoiceModel]) -> None:
        """Add voices while running (configuration hot reload). A name the engine already has
        is left alone: its characters' states stay valid. Pools are built on the caller's
        thread; the voices join the scheduler between ticks."""
        new = {name: self._runtime(name, model) for name, model in voices.items() if name not in self.voices}
        if not new:
            return

        def join() -> None:
            self.scheduler.voices.update(new)

        self._call(join)
        self.voices.update({name: voices[name] for name in new})
        log.info("engine: added voice(s) %s", ", ".join(sorted(new)))

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread; returns once it has warmed up (one prepare + step per voice)."""
        if self._thread is not None:
            return
        if self.device.type == "cpu":
            torch.set_num_threads(self.config.threads or os.cpu_count() or 1)
        state_bytes = sum(
            t[0].numel() * t.element_size() for vr in self.scheduler.voices.values() for t in vr.pool.tensors.values()
        )
        log.info("engine on %s: %d voices, %d slots, K=%d, %d state bytes per character (all voices), %d threads; "
                 "idle states in host memory: up to %d characters (%.1f GB)",
                 self.device, len(self.voices), self.config.slots, self.config.frames_per_tick, state_bytes,
                 torch.get_num_threads(), self.config.host_cache_characters,
                 self.config.host_cache_characters * state_bytes / 1e9)
        self._running = True
        self._thread = threading.Thread(target=self._run, name="npc-voice-engine", daemon=True)
        self._thread.start()
        self._ready.wait()  # warm-up done: the first request pays no lazy initialisation

    def close(self) -> None:
        """Stop the engine thread; open streams end "cancelled" (faded out, if the thread still
        runs, within CLOSE_FADE_WAIT_S)."""
        if self._thread is not None and self._running:
            with self.scheduler.lock:
                streams = [*self.scheduler.active, *self.scheduler.waiting]
            for stream in streams:
                stream.cancel()
            deadline = time.monotonic() + CLOSE_FADE_WAIT_S
            for stream in streams:
                stream.wait_ended(max(0.0, deadline - time.monotonic()))
        self._running = False
        if self._thread is not None:
            self.scheduler.wake()
            self._thread.join()
            self._thread = None
        self.scheduler.shutdown()

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            self.scheduler.warm_up()
        except Exception:  # not fatal: the first request pays for initialisation instead
            log.exception("engine warm-up failed")
        self._ready.set()
        delay: float | None = 0.0
        while self._running:
            self.scheduler.wait(delay)
            if not self._running:
                break
            try:
                delay = self.scheduler.tick()
            except Exception:  # a bug must not leave streams hanging: fail them and keep serving
                log.exception("engine tick failed; failing the active streams")
                self.scheduler.fail_active(EngineError("internal engine error (see the daemon log)"))
                delay = 0.0

    # ---- streams ------------------------------------------------------------------------

    def open_stream(
        self,
        character: str,
        voice: str,
        controls: VoiceControls,
        lexicon: Mapping[str, str],
        sample_rate: int,
        request_id: str,
    ) -> Stream:
        """A stream for ``character``; lines come with ``say``. Raises UnknownVoiceError, or
        ValueError for a bad rate or control value. Waiting for a slot happens on the engine
        thread: ``events()`` raises CapacityError if none came within max_queue_wait_s."""
        if self._thread is None or not self._running:
            raise EngineError("the engine is not running")
        if voice not in self.voices:
            raise UnknownVoiceError(f"unknown voice {voice!r}; this daemon has {sorted(self.voices)}")
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample rate {sample_rate} Hz is not supported; use one of {list(SAMPLE_RATES)}")
        _check_controls(controls)
        stream = Stream(self.scheduler, character=character, voice=voice, controls=controls,
                        lexicon=lexicon, sample_rate=sample_rate, request_id=request_id)
        self.scheduler.enqueue(stream)
        return stream

    def speak(self, req: LineRequest) -> Stream:
        """One line: open_stream + say + end_input. TextError is raised here, before any audio."""
        stream = self.open_stream(req.character, req.voice, req.controls, req.lexicon, req.sample_rate, req.request_id)
        try:
            stream.say(req.text)
        except BaseException:
            stream.close()
            raise
        stream.end_input()
        return stream

    def cancel_character(self, character: str, request_id: str = "") -> tuple[bool, int]:
        """Cancel the character's stream(s) (only ``request_id``'s if given): (was speaking,
        samples the cancelled stream produced, fade included). Waits for the fade frame."""
        sched = self.scheduler
        with sched.lock:
            targets = [s for s in sched.waiting if s.character == character]
            sp = sched.speaking.get(character)
            if sp is not None:
                targets.insert(0, sp.stream)
        targets = [s for s in targets if not request_id or s.request_id == request_id]
        for stream in targets:
            stream.cancel()
        if not targets:
            return False, 0
        end = targets[0].wait_ended(COMMAND_TIMEOUT_S)
        return True, end.total_samples if end is not None else 0

    # ---- character state (runs on the engine thread, between ticks) -----------------------

    def reset_character(self, character: str) -> None:
        """Forget the character's state: its next line starts from a fresh state."""
        def run() -> None:
            for vr in self.scheduler.voices.values():
                vr.pool.forget(character)
        self._call(run)

    def export_character(self, character: str, voice: str = "") -> bytes:
        """The character's state as versioned bytes. A character that has no state yet gets the
        fresh state of ``voice`` (EngineError if no voice is given then)."""
        def run() -> bytes:
            for vr in self.scheduler.voices.values():
                state = vr.pool.read(character)
                if state is not None:
                    return encode_state(vr.model.version, state)
            if not voice:
                raise EngineError(f"character {character!r} has no voice state yet (it has not spoken)")
            if voice not in self.scheduler.voices:
                raise UnknownVoiceError(f"unknown voice {voice!r}; this daemon has {sorted(self.voices)}")
            vr = self.scheduler.voices[voice]
            fresh = {name: torch.zeros(s.shape, dtype=s.dtype) for name, s in vr.pool.spec.items()}
            return encode_state(vr.model.version, fresh)
        return self._call(run)

    def import_character(self, character: str, data: bytes) -> None:
        """Replace the character's state with exported bytes (StateFormatError if they do not
        fit any voice of this daemon). Takes effect from the next frame it speaks."""
        version, state = decode_state(data)
        matches = [vr for vr in self.scheduler.voices.values() if vr.model.version == version]
        if not matches:
            known = sorted({vr.model.version for vr in self.scheduler.voices.values()})
            raise StateFormatError(f"the state belongs to voice version {version!r}; this daemon runs {known}")
        target = matches[0]
        try:
            target.pool.check(state)
        except ValueError as e:
            raise StateFormatError(f"the state does not fit voice {target.name!r}: {e}") from e

        def run() -> None:
            for vr in self.scheduler.voices.values():
                if vr is not target:
                    vr.pool.forget(character)
            target.pool.write(character, state)
        self._call(run)

    def stats(self) -> EngineStats:
        sched = self.scheduler
        with sched.lock:
            times = list(sched.tick_ms)
            c = sched.counters
            per_voice: dict[str, int] = {}
            # a character's state lives in one voice's pool only (it moves when its voice changes)
            known = sum(vr.pool.known_count() for vr in sched.voices.values())
            evicted = sum(vr.pool.host_count() for vr in sched.voices.values())
            for sp in sched.active.values():
                per_voice[sp.voice] = per_voice.get(sp.voice, 0) + 1
            return EngineStats(
                active_streams=len(sched.active),
                slots_in_use=sum(vr.pool.active_count for vr in sched.voices.values()),
                slots_total=sum(vr.pool.usable_slots for vr in sched.voices.values()),
                ticks=c.ticks,
                tick_ms_mean=statistics.fmean(times) if times else 0.0,
                tick_ms_p99=sorted(times)[min(len(times) - 1, int(0.99 * len(times)))] if times else 0.0,
                underruns=c.underruns,
                characters_known=known,
                characters_evicted=evicted,
                device=str(self.device),
                lines_completed=c.lines_completed,
                lines_cancelled=c.lines_cancelled,
                lines_rejected=c.lines_rejected,
                streams_waiting=len(sched.waiting),
                per_voice=per_voice,
            )

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the engine thread between ticks (inline when the thread is not running)."""
        if self._thread is None or not self._running or threading.current_thread() is self._thread:
            with self.scheduler.lock:
                return fn()
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to the caller
                future.set_exception(e)
        self.scheduler.submit(run)
        return future.result(COMMAND_TIMEOUT_S)


def _check_config(config: EngineConfig) -> None:
    if config.slots < 2:
        raise ValueError(f"EngineConfig.slots must be >= 2 (slot 0 is scratch), got {config.slots}")
    if config.frames_per_tick < 1:
        raise ValueError(f"EngineConfig.frames_per_tick must be >= 1, got {config.frames_per_tick}")
    if config.max_queue_wait_s < 0:
        raise ValueError(f"EngineConfig.max_queue_wait_s must be >= 0, got {config.max_queue_wait_s}")
    if config.lookahead_ms < 0:
        raise ValueError(f"EngineConfig.lookahead_ms must be >= 0, got {config.lookahead_ms}")
    if config.host_cache_characters < 0 or config.threads < 0 or config.max_batch < 0:
        raise ValueError(f"EngineConfig counts must be >= 0: {config}")


def _check_controls(c: VoiceControls) -> None:
    checks = [("speed", c.speed, 0.25, 4.0), ("pitch_semitones", c.pitch_semitones, -24.0, 24.0),
              ("formant", c.formant, 0.25, 4.0), ("breathiness", c.breathiness, 0.0, 1.0),
              ("volume", c.volume, 0.0, 8.0)]
    for name, value, lo, hi in checks:
        if not lo <= value <= hi:  # also catches NaN
            raise ValueError(f"voice control {name}={value} is outside [{lo}, {hi}]")
