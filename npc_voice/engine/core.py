"""EngineCore: everything the engine thread owns — requests, pools, arenas — and the tick.

Ownership: one thread (the engine thread) calls every method here except ``post``. Other
threads never read or write a Request, a pool or an arena: they ``post`` commands, which the
engine thread applies between ticks, and they read the ``snapshot`` (EngineStats) it publishes.
Events leave through each stream's handle only after the round's bookkeeping is done and the
snapshot is published, so a consumer that sees a stream end also sees it counted.

A tick (``tick``), on the engine thread:

1. admit waiting requests (busy character, slot, measured cost; bounded wait, then rejected);
2. prepare every new line (encoder + durations), one ``prepare_batch`` per voice;
3. advance every running request between frames: fade a cancelled one, start its next line,
   complete it;
4. lockstep on a beat: every K frames of audio, step every running stream of a voice whose
   audio runs out within ``lookahead_ms`` + one tick — in steady state all of them — by K frames
   in one model step (in pieces of at most max_batch rows); between beats only new lines (a
   first piece at once) and streams still catching up step (riding along with those pieces
   until their lead runs short);
5. per batch: clip, then per row marks, trim/fade and resample; queue events; finish lines.

Faults stay where they happen: a line that fails to prepare fails its request; a failing step
fails its batch (and forgets those characters' states, which the step may have half-written);
repeated step failures back off exponentially and report ``serving=False`` until a step works.
"""
from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from npc_voice.audio.pcm import BYTES_PER_SAMPLE, encode_pcm
from npc_voice.contracts import FRAMES_PER_S
from npc_voice.engine.api import (
    AudioEvent,
    BusyError,
    BusyPolicy,
    CapacityError,
    EndEvent,
    EngineConfig,
    EngineError,
    EngineStats,
    StepError,
    VoiceControls,
    controls_row,
)
from npc_voice.engine.arena import CondArena
from npc_voice.engine.cost import StepCost
from npc_voice.engine.device import DeviceStep
from npc_voice.engine.hostcpu import StealMeter
from npc_voice.engine.pool import StatePool
from npc_voice.engine.request import Request, RequestStatus
from npc_voice.engine.resampler import process_many
from npc_voice.engine.speaker import Speaker, make_resampler
from npc_voice.engine.split import CHUNKS_PER_THREAD, default_step_threads
from npc_voice.engine.stream import Event, Wakeups, phonemize, wake_loops
from npc_voice.model.api import PhonemeInput, PreparedLine, TextError, VoiceModel

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.05  # after a failed step; doubles per consecutive failure
BACKOFF_MAX_S = 2.0
TICK_BUCKETS_S = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
FIRST_AUDIO_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
FIRST_TICK_ROWS = 16  # rows of a piece while new lines wait: they first, topped up with the most urgent
CATCH_UP_MARGIN_S = 0.05  # a stream catching up steps alone once its lead is this short; before, it
#   waits to ride along with a piece that runs anyway (a new line's, or the beat): on CPU a call's
#   fixed cost is that of ~8 rows, and at 64 streams half of all calls held fewer than 8 rows
#   (28 % of model time; bench/README.md)
CPU_PIECE = 32  # max_batch 0 on CPU: rows per piece of a lockstep tick, per chunk with step threads (resolve_max_batch)
BEHIND_S = 0.02  # a stream this far behind its playback clock counts as overload (admission stops)
PARALLEL_GUARD = 1.4  # on a quiet host, the one-thread cost of the streams admitted may reach this share of
#   real time (the split calls' measured cost under max_load decides there) ...
GUARD_PER_STEAL = 9.0  # ... falling by this per unit of the hypervisor's share of the machine (0.09 per
#   1 %: 0.95 at 5 % steal, when the engine thread alone must still about keep real time, the helper's
#   vCPU being what a busy host takes first) ...
GUARD_MIN = 0.7  # ... down to this (from ~8 % steal): the engine's own vCPU is taken too, in bursts.
#   Measured at 64 streams (bench/README.md): admission on the split calls' time alone held 7 of 9
#   runs at <= 3 % steal but let 4-19 streams run dry at 13-22 % steal; a one-thread bound of 70 %
#   of real time from 5 % steal on kept 0 underruns in 13 runs but refused lines at 2-3 % steal
#   with half a core idle; 95 % from 5 % on let 4 streams run dry at 15-34 % steal.
RETIRED = "~retired-"  # voice key suffix of a replaced model still finishing its streams
REASONS = {RequestStatus.COMPLETED: "completed", RequestStatus.CANCELLED: "cancelled",
           RequestStatus.INTERRUPTED: "interrupted"}


@dataclass
class VoiceRuntime:
    """One voice: its model, its state pool and its silence frame."""

    name: str
    model: VoiceModel
    pool: StatePool
    silence: torch.Tensor  # [d_cond] on the model's device
    step: DeviceStep  # the model's step over this pool (CUDA graphs per batch bucket on GPU, captured up front)
    arena: CondArena  # conditioning frames of every speaking line, K-frame pages
    cost: StepCost = field(default_factory=StepCost)  # tick time of this voice vs batch size
    # ... and what those ticks would take with the model step on the engine thread alone (its
    # chunks' times added up; equal to ``cost`` unless step threads split the calls)
    one_thread_cost: StepCost = field(default_factory=StepCost)


@dataclass
class Counters:
    opened: int = 0
    completed: int = 0  # lines, counted per stream outcome below
    cancelled: int = 0
    interrupted: int = 0
    rejected: int = 0
    failed: int = 0
    ticks: int = 0
    underruns: int = 0
    step_failures: int = 0


class Histogram:
    """Cumulative counts per upper bound (seconds), Prometheus style."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        for i, b in enumerate(self.bounds):
            if seconds <= b:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def cumulative(self) -> tuple[tuple[float, int], ...]:
        out, total = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return tuple(out)


class EngineCore:
    def __init__(self, voices: dict[str, VoiceRuntime], config: EngineConfig, device: torch.device) -> None:
        self.voices = voices
        self.config = config
        self.device = device
        self.k = config.frames_per_tick
        self.tick_s = self.k / FRAMES_PER_S  # audio seconds one step adds to a stream
        self.beat_at = 0.0  # monotonic time of the next lockstep beat (_choose)
        self._filled_beat = -1.0  # the beat whose batch fill is being counted
        self._beat_rows = 0  # rows its pieces stepped so far (new lines' first pieces aside)
        self._beat_speaking = 0  # speaking streams when it began
        self._catch_up_at = math.inf  # when the earliest deferred catch-up row must step alone (_choose)
        self.max_batch = resolve_max_batch(config, device)
        self.waiting: dict[Request, None] = {}  # FIFO (insertion order)
        self.running: dict[Request, None] = {}
        self.speaking: dict[str, Request] = {}  # character -> its running request (at most one)
        self.queued: dict[str, int] = {}  # character -> its waiting requests
        self.counters = Counters()
        self.tick_ms: deque[float] = deque(maxlen=2048)
        self.fill: deque[float] = deque(maxlen=512)
        self.tick_hist = Histogram(TICK_BUCKETS_S)
        self.first_audio_hist = Histogram(FIRST_AUDIO_BUCKETS_S)
        self.fail_streak = 0
        self.backoff_until = 0.0
        self._inbox: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._cv = threading.Condition()
        self._out: list[tuple[Request, list[Event] | BaseException]] = []
        self._retired = 0  # voice models replaced by a reload so far
        self.overhead = 1.0  # measured round period / fitted step time (admission scales the fit by it)
        self.steal = StealMeter()  # the hypervisor's recent share of the machine (admission's one-thread bound)
        self.behind = 0  # speaking streams behind their playback clock at the last tick (no admission then)
        self._round_step_s = 0.0  # seconds in model steps during the current round
        self._opened: list[Request] = []  # taken in this round: their handles hear it at publish
        self.on_publish: Callable[[EngineStats], None] | None = None  # after each round's events (engine process)
        self.snapshot = self._build_snapshot()

    # ---- any thread --------------------------------------------------------------------------

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Queue a command for the engine thread (applied before its next tick)."""
        with self._cv:
            self._inbox.append((fn, args))
            self._cv.notify()

    def wake(self) -> None:
        with self._cv:
            self._cv.notify()

    # ---- the engine thread: command round ----------------------------------------------------

    def wait(self, delay: float | None) -> None:
        """Sleep until a command arrives or ``delay`` seconds pass (None: until a command)."""
        with self._cv:
            if not self._inbox and (delay is None or delay > 0):
                self._cv.wait(delay)

    def run_commands(self) -> None:
        with self._cv:
            commands, self._inbox = self._inbox, deque()
        for fn, args in commands:
            try:
                fn(*args)
            except Exception as e:  # a bug: log it, end the request it concerned, keep the engine up
                log.exception("engine command %s failed", getattr(fn, "__name__", fn))
                req = args[0] if args and isinstance(args[0], Request) else None
                if req is not None and not req.status.finished:
                    self._abandon(req, e)

    def _abandon(self, req: Request, error: Exception) -> None:
        """End ``req`` as failed after an internal error, whatever state it was left in."""
        failure = EngineError(f"internal engine error ({type(error).__name__}; see the daemon log)")
        try:
            self.finish(req, RequestStatus.FAILED, failure)
        except Exception:  # its bookkeeping is broken: at least its caller must not hang
            log.exception("engine: could not finish request %r cleanly", req.request_id)
            req.status = RequestStatus.FAILED
            self._out.append((req, failure))

    def publish(self) -> None:
        """End of a round: publish the snapshot, then hand out the round's events."""
        self.snapshot = self._build_snapshot()
        out, self._out = self._out, []
        opened, self._opened = self._opened, []
        wakeups: Wakeups = {}
        for req in opened:
            req.stream.mark_opened(wakeups)
        for req, item in out:
            if isinstance(item, BaseException):
                req.stream.fail(item)
            else:
                req.stream.push(item, wakeups)
        wake_loops(wakeups)
        if self.on_publish is not None:
            self.on_publish(self.snapshot)

    def cmd_open(self, req: Request) -> None:
        self.counters.opened += 1
        holder = self.speaking.get(req.character)
        waiting = self.queued.get(req.character, 0)
        if holder is not None or waiting:
            if req.busy is BusyPolicy.REJECT:
                self.finish(req, RequestStatus.REJECTED, BusyError(
                    f"character {req.character!r} is busy (busy_policy REJECT)"))
                return
            if req.busy is BusyPolicy.INTERRUPT:
                for other in [w for w in self.waiting if w.character == req.character]:
                    self.finish(other, RequestStatus.REJECTED, BusyError(
                        f"character {req.character!r}: a newer line interrupted it before it started"))
                if holder is not None:
                    self._stop(holder, RequestStatus.INTERRUPTED)
            elif waiting >= self.config.max_waiting_per_character:
                self.finish(req, RequestStatus.REJECTED, BusyError(
                    f"character {req.character!r} is busy with {waiting} more line(s) waiting "
                    f"(max_waiting_per_character={self.config.max_waiting_per_character})"))
                return
        self.waiting[req] = None
        self.queued[req.character] = waiting + 1
        self._opened.append(req)

    def cmd_say(self, req: Request, phonemes: PhonemeInput, line: PreparedLine | None = None,
                model: object = None) -> None:
        """A line, usually prepared already on the caller's thread (``line`` by ``model``); else,
        or if the voice's model changed meanwhile, the engine prepares it (in order)."""
        if req.status.finished or req.stopping or req.input_ended:
            return
        if line is not None and not req.lines and model is self.voices[req.voice].model:
            req.prepared.append((line, phonemes))
        else:
            req.lines.append(phonemes)

    def cmd_end_input(self, req: Request) -> None:
        req.input_ended = True

    def cmd_cancel(self, req: Request) -> None:
        if req.status is RequestStatus.WAITING:
            self.finish(req, RequestStatus.CANCELLED)
        elif req.status is RequestStatus.RUNNING:
            self._stop(req, RequestStatus.CANCELLED)

    def cmd_fail(self, req: Request, error: BaseException) -> None:
        """A line could not be said (unspeakable text, a failed preparation): the stream fails."""
        if not req.status.finished:
            self.finish(req, RequestStatus.FAILED, error)

    def cmd_close(self, req: Request) -> None:
        """The consumer is gone: end now, no fade (nobody hears it)."""
        if not req.status.finished:
            self.finish(req, RequestStatus.CANCELLED)

    def cancel_character(self, character: str, request_id: str) -> list[Request]:
        """Cancel the character's running and waiting requests (only ``request_id``'s if given)."""
        targets = [w for w in self.waiting if w.character == character]
        holder = self.speaking.get(character)
        if holder is not None:
            targets.insert(0, holder)
        targets = [r for r in targets if not request_id or r.request_id == request_id]
        for req in targets:
            self.cmd_cancel(req)
        return targets

    def stop_all(self) -> None:
        """Engine closing: waiting requests end now, running ones fade out and end "cancelled"."""
        for req in list(self.waiting):
            self.finish(req, RequestStatus.CANCELLED)
        for req in list(self.running):
            self._stop(req, RequestStatus.CANCELLED)

    def _stop(self, req: Request, status: RequestStatus) -> None:
        if req.stopping:
            return
        if status is RequestStatus.INTERRUPTED:
            req.interrupt_requested = True
        else:
            req.cancel_requested = True
        req.lines.clear()
        req.prepared.clear()

    def set_voices(self, runtimes: dict[str, VoiceRuntime]) -> None:
        """Add voices, or swap a voice's model: requests running on the old one finish on it
        under a retired key; waiting and new ones get the new runtime."""
        for name, runtime in runtimes.items():
            old = self.voices.get(name)
            for req in self.waiting:  # lines prepared by the old model: the new one prepares them again
                if req.voice == name and req.prepared:
                    req.lines.extendleft(reversed([p for _, p in req.prepared]))
                    req.prepared.clear()
            if old is not None:
                self._retired += 1
                key = f"{name}{RETIRED}{self._retired}"
                self.voices[key] = old
                for req in self.running:
                    if req.voice == name:
                        req.voice = key
            self.voices[name] = runtime
        self.capture_steps(runtimes.values())
        self._drop_retired()

    def _drop_retired(self) -> None:
        """Forget retired voice runtimes that no running request uses any more."""
        retired = [key for key in self.voices if RETIRED in key]
        if not retired:
            return
        in_use = {req.voice for req in self.running}
        for key in retired:
            if key not in in_use:
                del self.voices[key]
                log.info("engine: the replaced model of voice %r is gone (its last stream ended)",
                         key.split(RETIRED)[0])

    # ---- the one finish path -------------------------------------------------------------

    def finish(self, req: Request, status: RequestStatus, error: BaseException | None = None) -> None:
        """Release what ``req`` holds, count its outcome, end its stream (events out at publish)."""
        assert status.finished and not req.status.finished, (req.status, status)
        if req.status is RequestStatus.WAITING:
            if req in self.waiting:  # (not yet, when refused as it opens)
                self._unqueue(req)
        elif req.status is RequestStatus.RUNNING:
            del self.running[req]
            self._release(req, forget=status is RequestStatus.FAILED)
            if RETIRED in req.voice:
                self._drop_retired()
        req.status = status
        self._count(status)
        sp = req.speaker
        if sp is not None and sp.first_audio_at is not None:
            self.first_audio_hist.observe(sp.first_audio_at - req.opened_at)
        if error is not None:
            self._out.append((req, error))
            return
        events: list[Event] = []
        if sp is not None:
            tail = sp.flush()
            if tail is not None:
                events.append(_encode([sp], [tail])[0])  # type: ignore[arg-type]
            events.append(sp.end_event(REASONS[status], time.monotonic()))
        else:
            total = (time.monotonic() - req.opened_at) * 1000.0
            events.append(EndEvent(REASONS[status], 0, total, 0.0, total))
        self._out.append((req, events))

    def _unqueue(self, req: Request) -> None:
        del self.waiting[req]
        left = self.queued[req.character] - 1
        if left:
            self.queued[req.character] = left
        else:
            del self.queued[req.character]

    def _count(self, status: RequestStatus) -> None:
        c = self.counters
        if status is RequestStatus.COMPLETED:
            c.completed += 1
        elif status is RequestStatus.CANCELLED:
            c.cancelled += 1
        elif status is RequestStatus.INTERRUPTED:
            c.interrupted += 1
        elif status is RequestStatus.REJECTED:
            c.rejected += 1
        else:
            c.failed += 1

    def _release(self, req: Request, forget: bool) -> None:
        sp = req.speaker
        assert sp is not None
        vr = self.voices[req.voice]
        vr.arena.release(sp.pages)
        sp.pages, sp.line = [], None
        if self.speaking.get(req.character) is req:
            del self.speaking[req.character]
        vr.pool.release(req.character)
        if forget:  # a failed step may have half-written the state: start that character afresh
            vr.pool.forget(req.character)

    def fail_running(self, error: BaseException) -> None:
        """Last resort after repeated unexpected tick errors: fail everything running."""
        for req in list(self.running):
            self.finish(req, RequestStatus.FAILED, error)

    def shutdown(self) -> None:
        """The engine thread has stopped: end whatever is left "cancelled" (caller's thread)."""
        for req in [*self.waiting, *self.running]:
            self.finish(req, RequestStatus.CANCELLED)
        self.publish()

    # ---- the tick --------------------------------------------------------------------------

    def tick(self) -> float | None:
        """One round. Returns 0 if it stepped (run again), else seconds until something is
        due, or None when only a command can bring work."""
        start = time.monotonic()
        self._admit(start)
        self._prepare_new_lines()
        self._advance()
        if start < self.backoff_until:
            return self.backoff_until - start
        now = time.monotonic()
        batches = self._choose(now)
        if not batches:
            return self._next_due(time.monotonic())
        step_s = 0.0
        for voice, rows in batches.items():
            step_s += self._step(self.voices[voice], rows)
        self._round_step_s = step_s
        self.counters.ticks += 1
        elapsed = time.monotonic() - start
        self.tick_ms.append(elapsed * 1000.0)
        self.tick_hist.observe(elapsed)
        return 0.0

    def learn_round(self, round_s: float) -> None:
        """A whole round (commands, tick, events out; never the sleep between rounds) against the
        model steps in it: what a round costs beyond the fitted step (bookkeeping, events, the
        event loop and the line encoder competing for the cores), as a factor admission applies."""
        step_s, self._round_step_s = self._round_step_s, 0.0
        if step_s > 0.0:
            ratio = min(3.0, max(1.0, round_s / step_s))
            self.overhead = 0.95 * self.overhead + 0.05 * ratio

    def _admit(self, now: float) -> None:
        if self.waiting:
            self.steal.update(now)
        per_voice = self._running_per_voice()
        for req in list(self.waiting):
            waited = now - req.opened_at
            expired = waited >= req.wait_s
            holder = self.speaking.get(req.character)
            if holder is not None or self._earlier_waiter(req):
                if expired:
                    self.finish(req, RequestStatus.REJECTED, BusyError(
                        f"character {req.character!r} stayed busy for {waited:.2f} s "
                        f"(max_queue_wait_s={req.wait_s})"))
                continue
            vr = self.voices[req.voice]
            full = self._over_load(vr, per_voice)
            slot = None if full else self._acquire(vr, req.character)
            if slot is None:
                if expired:
                    why = full or f"all {vr.pool.usable_slots} voice slots of {vr.name!r} are busy"
                    self.finish(req, RequestStatus.REJECTED, CapacityError(
                        f"{why}; waited {waited:.2f} s (max_queue_wait_s={req.wait_s})"))
                continue
            self._unqueue(req)
            req.status = RequestStatus.RUNNING
            req.speaker = Speaker(req.controls, req.sample_rate, req.opened_at, slot, vr.model.hop, now,
                                  make_resampler(req.sample_rate), req.encoding)
            self.running[req] = None
            self.speaking[req.character] = req
            per_voice[vr.name] = per_voice.get(vr.name, 0) + 1

    def _earlier_waiter(self, req: Request) -> bool:
        """Whether an earlier waiting request has the same character (it goes first)."""
        if self.queued.get(req.character, 0) <= 1:
            return False
        for other in self.waiting:
            if other is req:
                return False
            if other.character == req.character:
                return True
        return False

    def _acquire(self, vr: VoiceRuntime, character: str) -> int | None:
        for other in self.voices.values():
            if other is not vr:  # a character's state belongs to the voice it last spoke with
                other.pool.forget(character)
        return vr.pool.acquire(character)

    def _over_load(self, vr: VoiceRuntime, per_voice: dict[str, int]) -> str:
        """Why one more running stream of ``vr`` would not fit max_load of real time ("" if it would)."""
        if self.config.max_load <= 0:
            return ""
        if per_voice.get(vr.name, 0) < self.config.admit_floor:
            return ""
        if self.behind >= max(1, len(self.running) // 10):
            return f"{self.behind} of {len(self.running)} speaking streams are behind real time"
        measured, alone = self._costs(per_voice, vr)
        real_time = self._tick_audio_s(vr)
        if measured * self.overhead > self.config.max_load * real_time:
            return (f"one more stream would need {measured * self.overhead * 1000:.1f} ms per {self.k}-frame tick, "
                    f"over {self.config.max_load:.0%} of real time ({self.config.max_load * real_time * 1000:.1f} ms) "
                    f"on {self.device}")
        # what a round would take with every call on the engine thread alone: its step, and the
        # round's work beyond the step (overhead) as measured
        one_thread = alone + (self.overhead - 1.0) * measured
        guard = self._guard_load()
        if one_thread > guard * real_time:
            return (f"one more stream would need {one_thread * 1000:.1f} ms per {self.k}-frame tick on one "
                    f"thread, over {guard:.0%} of real time while the hypervisor takes "
                    f"{self.steal.share:.0%} of the machine")
        return ""

    def _running_per_voice(self) -> dict[str, int]:
        per_voice: dict[str, int] = {}
        for req in self.running:
            per_voice[req.voice] = per_voice.get(req.voice, 0) + 1
        return per_voice

    def _tick_audio_s(self, vr: VoiceRuntime) -> float:
        """Seconds of audio one tick adds to a stream of ``vr`` (real time for one round)."""
        return self.k * vr.model.hop / vr.model.sample_rate

    def _costs(self, per_voice: dict[str, int], plus: VoiceRuntime | None = None) -> tuple[float, float]:
        """Fitted seconds per tick for the running streams (and one more of ``plus``): as the calls
        measure (split over the step threads), and with each call on one thread."""
        measured = alone = 0.0
        for name, other in self.voices.items():
            n = per_voice.get(name, 0) + (1 if other is plus else 0)
            if n:
                measured += other.cost.predict(n, self.max_batch)
                alone += other.one_thread_cost.predict(n, self.max_batch)
        return measured, alone

    def _guard_load(self) -> float:
        """The share of real time the one-thread cost may reach: PARALLEL_GUARD on a quiet host,
        less GUARD_PER_STEAL per unit of the hypervisor's share, GUARD_MIN at least."""
        return max(GUARD_MIN, PARALLEL_GUARD - GUARD_PER_STEAL * self.steal.share)

    def _prepare_new_lines(self) -> None:
        """Encoder + durations for every new line, one batch per voice; faults stay per request."""
        work: dict[str, list[tuple[Request, PhonemeInput]]] = {}
        for req in self.running:
            while req.lines:
                work.setdefault(req.voice, []).append((req, req.lines.popleft()))
        for voice, items in work.items():
            for (req, phonemes), line in zip(items, self._prepare_voice(voice, items), strict=True):
                if req.status is not RequestStatus.RUNNING:
                    continue  # failed by an earlier line of this round
                if isinstance(line, PreparedLine):
                    req.prepared.append((line, phonemes))
                elif isinstance(line, TextError) and req.has_audio:
                    log.warning("stream %r: skipped a line the voice cannot speak: %s", req.request_id, line)
                else:
                    self.finish(req, RequestStatus.FAILED, line)

    def _prepare_voice(
        self, voice: str, items: list[tuple[Request, PhonemeInput]]
    ) -> list[PreparedLine | TextError | StepError]:
        model = self.voices[voice].model
        speeds = [req.controls.speed for req, _ in items]
        with torch.inference_mode():
            try:
                return list(model.prepare_batch([p for _, p in items], speeds=speeds))
            except Exception:  # one bad line: find it, keep the others
                pass
            out: list[PreparedLine | TextError | StepError] = []
            for (req, p), speed in zip(items, speeds, strict=True):
                try:
                    out.append(model.prepare(p, speed=speed))
                except TextError as e:
                    out.append(e)
                except Exception as e:
                    log.exception("stream %r: preparing a line failed", req.request_id)
                    out.append(StepError(f"the daemon failed to prepare this line ({type(e).__name__}; see its log)"))
            return out

    def _advance(self) -> None:
        """Between frames: fade a stopping stream, start its next line, or complete it."""
        for req in list(self.running):
            sp = req.speaker
            assert sp is not None
            if req.stopping:
                if sp.line is not None and sp.gen > 0:
                    sp.fading = True  # one more frame, faded to zero, this tick
                else:
                    self.finish(req, RequestStatus.INTERRUPTED if req.interrupt_requested else RequestStatus.CANCELLED)
                continue
            while sp.line is None and req.prepared:
                if self._start_line(req, sp):
                    break
            if sp.line is None and not req.prepared and not req.lines and req.input_ended:
                self.finish(req, RequestStatus.COMPLETED)

    def _start_line(self, req: Request, sp: Speaker) -> bool:
        line, _ = req.prepared.popleft()
        if line.n_frames == 0:
            return False
        vr = self.voices[req.voice]
        pad = -line.n_frames % self.k  # silence frames so every tick reads exactly K frames
        cond = line.cond if pad == 0 else torch.cat([line.cond, vr.silence.expand(pad, -1)])
        sp.begin_line(line, vr.arena.alloc(cond), time.monotonic())
        return True

    def _choose(self, now: float) -> dict[str, list[Request]]:
        """Lockstep on a beat. Every K frames of audio (``tick_s``) a beat steps every speaking
        stream whose generated audio runs out less than ``lookahead_ms`` + one tick after the beat
        (at most ``lead_slack_ms``): in steady state all of them, once each, so they keep one
        phase and the batch stays whole. Between beats only two kinds of rows step: new lines (no
        audio yet, or fading) in a first piece at once, and streams that would still be under
        ``lookahead_ms`` after the next beat's step (a new line catching up after its first piece,
        a stream that fell behind). Those catch-up rows ride along with a piece that runs anyway
        and step alone only when one's lead falls under CATCH_UP_MARGIN_S (a stream behind its
        clock at once). Pieces hold at most max_batch rows, the most urgent first; a
        piece while new lines wait at most max(new lines, FIRST_TICK_ROWS), so their first audio
        does not wait for a full one.

        (Before, a tick ran whenever one stream fell under ``lookahead_ms`` and stepped everyone
        under ``lookahead_ms + lead_slack_ms``; streams reached that cap at different phases and
        the ticks split: batch fill 0.45-0.50 at 16-32 streams. bench/README.md, bench/pacing_sim.py.)"""
        target = self.config.lookahead_ms / 1000.0
        lead = min(self.tick_s, self.config.lead_slack_ms / 1000.0)
        if self.beat_at < now - self.tick_s:  # idle, or more than a tick late: the beats restart now
            self.beat_at = now
        beat = now >= self.beat_at
        fresh: list[Request] = []  # no audio yet, or fading: a piece at once
        urgent: list[Request] = []  # under lookahead even after the next beat's step
        in_beat: list[Request] = []  # the next beat steps these
        later: list[Request] = []  # not due at this beat; a short piece may take them (_top_up)
        top_up = now + target + self.config.lead_slack_ms / 1000.0 - self.tick_s
        speaking = 0
        behind = 0
        first_urgent = math.inf  # the earliest deadline among the urgent rows
        catch_up = self.beat_at + target - self.tick_s
        cap = self.beat_at + target + lead
        for req in self.running:
            sp = req.speaker
            assert sp is not None
            if sp.line is None:
                continue
            speaking += 1
            if sp.fading:
                fresh.append(req)  # one faded frame: it goes in whichever piece runs now
                continue
            ahead = sp.ahead_s(now)
            if ahead is None:
                fresh.append(req)
                continue
            if ahead < 0.0 and not sp.behind:
                self.counters.underruns += 1
            sp.behind = ahead < 0.0
            behind += ahead < -BEHIND_S
            deadline = sp.deadline()
            if deadline < catch_up:
                urgent.append(req)
                first_urgent = min(first_urgent, deadline)
            elif deadline < cap:
                in_beat.append(req)
            elif deadline < top_up:
                later.append(req)
        self.behind = behind
        if beat and not (urgent or in_beat):  # this beat is done (or had nothing): the next one
            self._close_beat()
            self.beat_at += self.tick_s
            beat = False
        self._catch_up_at = math.inf
        if urgent and not (fresh or beat):  # catch-up alone: only once some row's lead runs short
            if first_urgent - CATCH_UP_MARGIN_S > now:
                self._catch_up_at = first_urgent - CATCH_UP_MARGIN_S
                urgent = []
        rows = fresh + urgent + (in_beat if beat else [])
        if not rows:
            return {}
        if beat and self._filled_beat != self.beat_at:  # a beat's first piece (a late beat restarted)
            self._close_beat()
            self._filled_beat = self.beat_at
            self._beat_speaking = speaking - len(fresh)
        limit = self.max_batch  # a piece never holds more
        if fresh:  # a short first piece: new lines' first audio does not wait for a full one
            limit = min(limit, max(len(fresh), FIRST_TICK_ROWS))
        if len(rows) > limit:
            rows.sort(key=_urgency)
            rows = rows[:limit]
        elif beat and not fresh and speaking > limit and len(rows) < limit and later:
            rows += _top_up(rows, later, limit - len(rows))
        if beat:
            new = set(fresh)
            self._beat_rows += sum(1 for req in rows if req not in new)
        batches: dict[str, list[Request]] = {}
        for req in rows:
            batches.setdefault(req.voice, []).append(req)
        return batches

    def _close_beat(self) -> None:
        """Batch fill of the beat just over: the rows its pieces stepped per stream speaking when
        it began (top-ups included: they are the next beat's rows, taken early)."""
        if self._beat_speaking > 0:
            self.fill.append(min(1.0, self._beat_rows / self._beat_speaking))
        self._beat_rows = self._beat_speaking = 0

    def _step(self, vr: VoiceRuntime, rows: list[Request]) -> float:
        """One model step for ``rows`` of one voice, then their events; a failure fails this batch."""
        t0 = time.perf_counter()
        speakers = [req.speaker for req in rows]
        try:
            cond = vr.arena.gather([sp.page(self.k) for sp in speakers])  # type: ignore[union-attr]  # [B, K, d]
            controls = torch.tensor([sp.controls for sp in speakers], dtype=torch.float32)  # type: ignore[union-attr]
            slots = torch.tensor([sp.slot for sp in speakers], dtype=torch.int64)  # type: ignore[union-attr]
            with torch.inference_mode():
                m0 = time.perf_counter()
                pcm = vr.step(slots.to(self.device), cond, controls.to(self.device)).float().cpu().numpy()
                model_s = time.perf_counter() - m0
        except Exception as e:
            self._step_failed(vr, rows, e)
            return time.perf_counter() - t0
        self._step_succeeded()
        np.clip(pcm, -1.0, 1.0, out=pcm)  # [B, K * hop], once for the whole batch
        now = time.monotonic()
        cut: list[tuple[Request, list[Event], np.ndarray]] = []
        for i, req in enumerate(rows):
            try:
                events, chunk = req.speaker.cut(pcm[i], self.k, now)  # type: ignore[union-attr]
            except Exception as e:
                self._render_failed(req, e)
                continue
            cut.append((req, list(events), chunk))
        audios = _encode([r.speaker for r, _, _ in cut], self._resample([(r.speaker, c) for r, _, c in cut]))
        for (req, events, _), audio in zip(cut, audios, strict=True):
            if req.status is not RequestStatus.RUNNING:
                continue  # failed while resampling
            if audio is not None:
                events.append(audio)
            self._deliver(req, events)
        spent = time.perf_counter() - t0
        _learn_cost(vr, len(rows), spent, model_s)
        return spent

    def _resample(self, items: list[tuple[Speaker | None, np.ndarray]]) -> list[AudioEvent | None]:
        """Each row's chunk at its output rate: one matrix product per rate for the whole batch."""
        out: list[AudioEvent | None] = [None] * len(items)
        todo = [i for i, (sp, _) in enumerate(items) if sp is not None and sp.resampler is not None]
        for i, (sp, chunk) in enumerate(items):
            if i not in todo:
                out[i] = sp.audio(chunk)  # type: ignore[union-attr]
        if not todo:
            return out
        speakers = [items[i][0] for i in todo]
        try:
            resampled = process_many([sp.resampler for sp in speakers], [items[i][1] for i in todo])  # type: ignore
        except Exception:  # find the row that fails; the others go on
            log.exception("batched resampling failed; resampling row by row")
            resampled = []
            for i in todo:
                try:
                    resampled.append(items[i][0].resampler.process(items[i][1]))  # type: ignore[union-attr]
                except Exception as e:
                    self._render_failed(self._request_of(items[i][0]), e)
                    resampled.append(np.zeros(0, np.float32))
        for i, sp, pcm in zip(todo, speakers, resampled, strict=True):
            out[i] = sp.audio(pcm)  # type: ignore[union-attr]
        return out

    def _request_of(self, sp: Speaker | None) -> Request:
        return next(r for r in self.running if r.speaker is sp)

    def _render_failed(self, req: Request, error: Exception) -> None:
        log.error("stream %r: rendering failed", req.request_id, exc_info=error)
        self.finish(req, RequestStatus.FAILED, StepError(f"the daemon failed rendering this stream "
                                                        f"({type(error).__name__}; see its log)"))

    def _deliver(self, req: Request, events: list[Event]) -> None:
        sp = req.speaker
        assert sp is not None
        self._out.append((req, events))
        if sp.fading:
            self.finish(req, RequestStatus.INTERRUPTED if req.interrupt_requested else RequestStatus.CANCELLED)
        elif sp.pos >= sp.n_frames:
            self._end_line(req, sp)

    def _end_line(self, req: Request, sp: Speaker) -> None:
        self.voices[req.voice].arena.release(sp.pages)
        sp.pages, sp.line = [], None
        if not req.prepared and not req.lines and req.input_ended:
            self.finish(req, RequestStatus.COMPLETED)

    def _step_failed(self, vr: VoiceRuntime, rows: list[Request], error: Exception) -> None:
        self.counters.step_failures += 1
        self.fail_streak += 1
        backoff = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.fail_streak - 1))
        self.backoff_until = time.monotonic() + backoff
        log.exception("voice %r: model step over %d stream(s) failed (%d in a row; next step in %.2f s)",
                      vr.name, len(rows), self.fail_streak, backoff, exc_info=error)
        failure = StepError(f"the daemon's model step failed ({type(error).__name__}; see its log)")
        for req in rows:
            self.finish(req, RequestStatus.FAILED, failure)

    def _step_succeeded(self) -> None:
        if self.fail_streak:
            log.info("model steps work again after %d failure(s)", self.fail_streak)
        self.fail_streak = 0
        self.backoff_until = 0.0

    def _next_due(self, now: float) -> float | None:
        """Seconds until the next beat, or the earlier moment a deferred catch-up row must step
        (``_choose``), while any stream speaks, or until the earliest waiting request's bounded
        wait ends; None when only a command can bring work."""
        times = [req.opened_at + req.wait_s for req in self.waiting]
        if any(req.speaker is not None and req.speaker.line is not None for req in self.running):
            times.append(min(self.beat_at, self._catch_up_at))
        if not times:
            return None
        return max(0.0005, min(times) - now)

    # ---- warm-up and snapshot ----------------------------------------------------------------

    def capture_steps(self, runtimes: Iterable[VoiceRuntime]) -> None:
        """Capture each voice's step for every batch bucket now (CUDA graphs; nothing on CPU):
        at start-up and when voices are added, on this thread, never inside a tick."""
        neutral = torch.tensor([controls_row(VoiceControls())], device=self.device)
        for vr in runtimes:
            with torch.inference_mode():
                vr.step.capture(vr.silence.expand(1, self.k, -1), neutral)

    def warm_up(self) -> None:
        """Every voice's step captured (``capture_steps``), then a prepare and steps at a few batch
        sizes per voice on scratch slot 0: the first request pays no lazy initialisation, and the
        cost fit (admission) has a first shape."""
        self.capture_steps(self.voices.values())
        phonemes = phonemize("Hello there.", {})
        neutral = controls_row(VoiceControls())
        for vr in self.voices.values():
            with torch.inference_mode():
                line = vr.model.prepare_batch([phonemes], speeds=[1.0])[0]
                cond = torch.cat([line.cond[: self.k], vr.silence.expand(max(0, self.k - line.n_frames), -1)])
                for i, batch in enumerate(b for b in (1, 1, 8, 32) if b <= self.max_batch):
                    slots = torch.zeros(batch, dtype=torch.int64, device=self.device)  # all on scratch slot 0
                    controls = torch.tensor([neutral], device=self.device).expand(batch, -1)
                    t0 = time.perf_counter()
                    vr.step(slots, cond[None].expand(batch, -1, -1), controls).cpu()
                    if i > 0:  # the first call pays lazy initialisation; the others seed the cost fit
                        spent = time.perf_counter() - t0
                        _learn_cost(vr, batch, spent, spent)

    def _build_snapshot(self) -> EngineStats:
        c = self.counters
        times = list(self.tick_ms)
        per_voice = self._running_per_voice()
        pools = [(name, vr.pool) for name, vr in self.voices.items()]
        load = sum(self.overhead * self._costs({name: n})[0] / self._tick_audio_s(self.voices[name])
                   for name, n in per_voice.items())  # each voice's share of its own real time
        return EngineStats(
            active_streams=len(self.running),
            slots_in_use=sum(p.active_count for _, p in pools),
            slots_total=sum(p.usable_slots for _, p in pools),
            ticks=c.ticks,
            tick_ms_mean=statistics.fmean(times) if times else 0.0,
            tick_ms_p99=sorted(times)[min(len(times) - 1, int(0.99 * len(times)))] if times else 0.0,
            underruns=c.underruns,
            characters_known=sum(p.known_count() for _, p in pools),
            characters_evicted=sum(p.host_count() for _, p in pools),
            device=str(self.device),
            lines_completed=c.completed,
            lines_cancelled=c.cancelled,
            lines_rejected=c.rejected,
            streams_waiting=len(self.waiting),
            per_voice=per_voice,
            lines_opened=c.opened,
            lines_failed=c.failed,
            lines_interrupted=c.interrupted,
            batch_fill=statistics.fmean(self.fill) if self.fill else 1.0,
            step_failures=c.step_failures,
            characters_forgotten=sum(p.forgotten for _, p in pools),
            serving=self.fail_streak == 0,
            load=load,
            slots_per_voice={name: (p.active_count, p.usable_slots) for name, p in pools if RETIRED not in name},
            tick_seconds_buckets=self.tick_hist.cumulative(),
            tick_seconds_sum=self.tick_hist.sum,
            first_audio_seconds_buckets=self.first_audio_hist.cumulative(),
            first_audio_seconds_sum=self.first_audio_hist.sum,
        )


def _learn_cost(vr: VoiceRuntime, rows: int, spent: float, model_s: float) -> None:
    """A measured call of ``rows`` rows (``spent`` seconds, ``model_s`` of them in the model step)
    into both cost fits: as it ran, and as it would have run with the step on one thread."""
    vr.cost.add(rows, spent)
    one_thread = vr.step.one_thread_s()
    vr.one_thread_cost.add(rows, spent if one_thread is None else spent - model_s + one_thread)


def _urgency(req: Request) -> float:
    """Sort key of a piece: fading streams, then new lines (deadline = when they opened), then by
    when playback reaches the end of their generated audio."""
    sp = req.speaker
    assert sp is not None
    return -math.inf if sp.fading else sp.deadline()


def _top_up(rows: list[Request], later: list[Request], room: int) -> list[Request]:
    """A beat's last, short piece filled with the same voice's streams due soonest after it.
    Only while more streams speak than one piece holds: there the short pieces are what is left
    of a beat (or, under overload, what trickles in), and on CPU a call's fixed cost is that of
    ~8 rows; the streams taken early are not due at the next beat, so its pieces fill up too.
    With fewer streams every beat is one piece anyway, and taking streams early would only
    scatter their phases."""
    voice = rows[0].voice
    if any(req.voice != voice for req in rows):
        return []
    return sorted((req for req in later if req.voice == voice), key=_urgency)[:room]


def resolve_max_batch(config: EngineConfig, device: torch.device) -> int:
    """``max_batch`` 0 = automatic: on CPU a lockstep tick is stepped in pieces of at most
    CPU_PIECE rows, so a new line's first-audio tick waits for one piece, not the whole batch
    (per-row cost on CPU is flat from ~16 rows up; 64 streams: first audio p50 76 -> 52 ms,
    bench/README.md); with step threads a piece holds CPU_PIECE rows per chunk it is cut into
    (CHUNKS_PER_THREAD per thread: 128 rows with two, which take about the time of 64 on one;
    80 streams in one call instead of two: p99 first audio 114-553 ms against 247-1028 in six
    alternating runs). On GPU every usable slot steps at once (one CUDA graph)."""
    if config.max_batch:
        return config.max_batch
    if device.type == "cpu":
        threads = resolve_step_threads(config, device)
        return min(CPU_PIECE * (1 if threads < 2 else threads * CHUNKS_PER_THREAD), config.slots - 1)
    return config.slots - 1


def resolve_step_threads(config: EngineConfig, device: torch.device) -> int:
    """Threads stepping one model call's rows together: ``step_threads``, 0 = automatic
    (split.default_step_threads); always 1 on GPU (one CUDA graph per call)."""
    if device.type != "cpu":
        return 1
    return config.step_threads or default_step_threads()


def _encode(speakers: list[Speaker | None], audios: list[AudioEvent | None]) -> list[AudioEvent | None]:
    """Wire bytes for the rows whose stream asked for an encoding: one ``encode_pcm`` per encoding
    for the whole batch, then one slice of the bytes per row."""
    groups: dict[str, list[int]] = {}
    for i, (sp, audio) in enumerate(zip(speakers, audios, strict=True)):
        if audio is not None and sp is not None and sp.encoding:
            groups.setdefault(sp.encoding, []).append(i)
    out = list(audios)
    for encoding, rows in groups.items():
        pcms = [audios[i].pcm for i in rows]  # type: ignore[union-attr]
        wire = encode_pcm(np.concatenate(pcms), encoding)
        width = BYTES_PER_SAMPLE[encoding]
        start = 0
        for i, pcm in zip(rows, pcms, strict=True):
            a = audios[i]
            assert a is not None
            end = start + len(pcm) * width
            out[i] = AudioEvent(a.pcm, a.sample_offset, wire[start:end], a.due_t, a.made_t)
            start = end
    return out

