"""Scheduler: admission, per-tick batch choice, one model step per voice, events out.

One engine thread calls ``tick()`` in a loop. A tick:

1. admits waiting streams into pool slots (bounded wait, then CapacityError);
2. prepares every new line of every stream in one ``prepare_batch`` call per voice;
3. picks the streams whose generated audio is less than ``lookahead_ms`` ahead of their
   playback clock (a stream with no audio yet always qualifies), earliest deadline first
   when more qualify than ``max_batch``;
4. runs one ``model.step`` per voice over those rows (K frames each; cond gathered from the
   voice's CondArena in one index op);
5. trims, fades (cancel), resamples and queues MarkEvent / AudioEvent / EndEvent per stream.

Admission is by free slot, and optionally (``max_load``) by the measured step cost.

All bookkeeping happens under ``lock``; it is released around the model calls so callers on
other threads (open, say, close, stats) never wait for the device. Every tensor write to the
pools (allocate, evict, restore, import) happens on the engine thread between steps.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from npc_voice.engine.api import CapacityError, EndEvent, EngineConfig
from npc_voice.engine.arena import CondArena
from npc_voice.engine.cost import StepCost
from npc_voice.engine.device import StepFn
from npc_voice.engine.pool import StatePool
from npc_voice.engine.speaker import Speaker, make_resampler
from npc_voice.engine.stream import Event, Stream, Wakeups, phonemize, wake_loops
from npc_voice.model.api import PhonemeInput, PreparedLine, TextError, VoiceModel

log = logging.getLogger(__name__)


@dataclass
class VoiceRuntime:
    """One voice: its model, its state pool and its silence frame."""

    name: str
    model: VoiceModel
    pool: StatePool
    silence: torch.Tensor  # [d_cond] on the model's device
    step: StepFn  # the model's step over this pool (CUDA graphs per batch bucket on GPU)
    arena: CondArena  # conditioning frames of every speaking line, K-frame pages
    cost: StepCost = field(default_factory=StepCost)  # step time vs batch size (admission control)


@dataclass
class Counters:
    ticks: int = 0
    underruns: int = 0
    lines_completed: int = 0
    lines_cancelled: int = 0
    lines_rejected: int = 0


class Scheduler:
    def __init__(self, voices: dict[str, VoiceRuntime], config: EngineConfig, device: torch.device) -> None:
        self.voices = voices
        self.config = config
        self.device = device
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.waiting: list[Stream] = []  # opened, not yet holding a slot (FIFO)
        self.active: dict[Stream, Speaker] = {}  # holding a slot
        self.speaking: dict[str, Speaker] = {}  # character -> its active speaker (at most one)
        self.counters = Counters()
        self.tick_ms: deque[float] = deque(maxlen=2048)
        self.max_batch = config.max_batch or (config.slots - 1)
        self._woken = False
        self._commands: deque[Callable[[], None]] = deque()
        self._wakeups: Wakeups = {}  # asyncio consumers to wake at the end of the tick

    # ---- called from any thread (hold no lock when calling) -----------------------------

    def wake(self) -> None:
        with self.cond:
            self._woken = True
            self.cond.notify()

    def enqueue(self, stream: Stream) -> None:
        with self.cond:
            self.waiting.append(stream)
            self._woken = True
            self.cond.notify()

    def stream_closed(self, stream: Stream) -> None:
        """Free the stream's slot now; the state stays resident (idle, evictable)."""
        with self.lock:
            if stream in self.waiting:
                self.waiting.remove(stream)
            sp = self.active.pop(stream, None)
            if sp is not None:
                if sp.line is not None:
                    self.counters.lines_cancelled += 1
                self._release(sp)

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the engine thread before the next tick (under the lock)."""
        with self.cond:
            self._commands.append(fn)
            self._woken = True
            self.cond.notify()

    # ---- the engine thread --------------------------------------------------------------

    def wait(self, delay: float | None) -> None:
        """Sleep until woken or ``delay`` seconds pass (None: until woken); runs commands."""
        with self.cond:
            if not self._woken and not self._commands and (delay is None or delay > 0):
                self.cond.wait(delay)
            self._woken = False
            self.run_commands_locked()

    def run_commands_locked(self) -> None:
        while self._commands:
            self._commands.popleft()()

    def tick(self) -> float | None:
        """One round. Returns 0 if it stepped (run again), else seconds until something is
        due, or None when only a wake-up can bring work."""
        try:
            return self._tick()
        finally:
            wakeups, self._wakeups = self._wakeups, {}
            wake_loops(wakeups)

    def _tick(self) -> float | None:
        start = time.monotonic()
        with self.lock:
            self._admit(start)
            work = self._take_new_lines()
        prepared = self._prepare(work) if work else []
        with self.lock:
            self._attach(prepared)
            now = time.monotonic()
            self._advance(now)
            batches = self._choose(now)
            inputs = [(self.voices[v], rows, *self._gather(self.voices[v], rows)) for v, rows in batches.items()]
        if not inputs:
            with self.lock:
                return self._next_due(time.monotonic())
        outputs = []
        for vr, rows, slots, cond, controls in inputs:
            t0 = time.perf_counter()
            with torch.inference_mode():
                pcm = vr.step(slots, cond, controls).float().cpu().numpy()  # [B, K * hop]
            vr.cost.add(len(rows), time.perf_counter() - t0)
            outputs.append((rows, np.clip(pcm, -1.0, 1.0)))  # once for the whole batch
        now = time.monotonic()
        rendered = [(rows, self._render(rows, pcm_np, now)) for rows, pcm_np in outputs]
        with self.lock:
            for rows, events in rendered:
                self._distribute(rows, events, now)
            self.counters.ticks += 1
            self.tick_ms.append((time.monotonic() - start) * 1000.0)
        return 0.0

    def warm_up(self) -> None:
        """One prepare and one step per voice on scratch slot 0, so that the first request does
        not pay for lazy initialisation (allocator, kernels, a CUDA graph for batch 1)."""
        k = self.config.frames_per_tick
        phonemes = phonemize("Hello there.", {})
        for vr in self.voices.values():
            with torch.inference_mode():
                line = vr.model.prepare_batch([phonemes], speeds=[1.0])[0]
                cond = torch.cat([line.cond[:k], vr.silence.expand(max(0, k - line.n_frames), -1)])
                for i, batch in enumerate((1, 1, min(8, self.max_batch))):
                    slots = torch.zeros(batch, dtype=torch.int64, device=self.device)  # all on scratch slot 0
                    controls = torch.tensor([[1.0, 1.0, 0.0, 1.0]], device=self.device).expand(batch, -1)
                    t0 = time.perf_counter()
                    vr.step(slots, cond[None].expand(batch, -1, -1), controls).cpu()
                    if i > 0:  # the first call pays lazy initialisation; the others seed the cost fit
                        vr.cost.add(batch, time.perf_counter() - t0)

    def fail_active(self, error: BaseException) -> None:
        """Fail every stream holding a slot (after an unexpected error in a tick)."""
        with self.lock:
            for sp in list(self.active.values()):
                self.active.pop(sp.stream)
                self._release(sp)
                sp.stream.fail(error)

    def shutdown(self) -> None:
        """End every stream "cancelled" (engine closing)."""
        with self.lock:
            now = time.monotonic()
            for stream in self.waiting:
                stream.push([EndEvent("cancelled", 0, 0.0, 0.0, (now - stream.opened_at) * 1000.0)])
            self.waiting.clear()
            for sp in list(self.active.values()):
                self._finish(sp, "cancelled", now)
            wakeups, self._wakeups = self._wakeups, {}
        wake_loops(wakeups)

    # ---- tick phases (lock held unless noted) --------------------------------------------

    def _admit(self, now: float) -> None:
        still: list[Stream] = []
        per_voice: dict[str, int] = {}
        if self.config.max_load > 0:
            for sp in self.active.values():
                per_voice[sp.voice] = per_voice.get(sp.voice, 0) + 1
        for stream in self.waiting:
            _, _, cancelled, closed = stream.input_state()
            if closed:
                continue
            if cancelled:
                stream.push([EndEvent("cancelled", 0, 0.0, 0.0, (now - stream.opened_at) * 1000.0)], self._wakeups)
                self.counters.lines_cancelled += 1
                continue
            waited = now - stream.opened_at
            holder = self.speaking.get(stream.character)
            if holder is not None:
                # Queued behind the character's current stream. Its end is bounded once its
                # input has ended; a stream still taking input (Converse) could hold it forever.
                if not holder.stream.input_state()[1] and waited >= self.config.max_queue_wait_s:
                    self._reject(stream, f"character {stream.character!r} is busy with stream "
                                 f"{holder.stream.request_id!r} for more than {self.config.max_queue_wait_s} s")
                else:
                    still.append(stream)
                continue
            vr = self.voices[stream.voice]
            full = self._over_load(vr, per_voice.get(vr.name, 0) + 1)
            if full:
                if waited >= self.config.max_queue_wait_s:
                    self._reject(stream, f"voice {vr.name!r} is at its measured capacity ({full}); waited "
                                 f"{waited:.2f} s (max_queue_wait_s={self.config.max_queue_wait_s})")
                else:
                    still.append(stream)
                continue
            for other in self.voices.values():
                if other is not vr:  # a character's state belongs to the voice it last spoke with
                    other.pool.forget(stream.character)
            slot = vr.pool.acquire(stream.character)
            if slot is None:
                if waited >= self.config.max_queue_wait_s:
                    self._reject(stream, f"all {vr.pool.usable_slots} voice slots of {vr.name!r} are busy; "
                                 f"waited {waited:.2f} s (max_queue_wait_s={self.config.max_queue_wait_s})")
                else:
                    still.append(stream)
                continue
            sp = Speaker(stream, vr.name, slot, vr.model.hop, now, make_resampler(stream.sample_rate))
            self.active[stream] = sp
            self.speaking[stream.character] = sp
            per_voice[vr.name] = per_voice.get(vr.name, 0) + 1
        self.waiting = still

    def _over_load(self, vr: VoiceRuntime, streams: int) -> str:
        """Why ``streams`` active streams would not fit max_load of real time ("" if they do)."""
        if self.config.max_load <= 0 or streams <= 1:
            return ""
        budget = self.config.max_load * self.config.frames_per_tick * vr.model.hop / vr.model.sample_rate
        capacity = vr.cost.capacity(budget)
        if streams <= capacity:
            return ""
        return f"{int(capacity)} streams fit {self.config.max_load:.0%} of real time on {self.device}"

    def _reject(self, stream: Stream, why: str) -> None:
        self.counters.lines_rejected += 1
        log.info("rejected stream %r (%s): %s", stream.request_id, stream.character, why)
        stream.fail(CapacityError(why))

    def _take_new_lines(self) -> dict[str, list[tuple[Speaker, PhonemeInput]]]:
        work: dict[str, list[tuple[Speaker, PhonemeInput]]] = {}
        for sp in self.active.values():
            for phonemes in sp.stream.take_lines():
                work.setdefault(sp.voice, []).append((sp, phonemes))
        return work

    def _prepare(
        self, work: dict[str, list[tuple[Speaker, PhonemeInput]]]
    ) -> list[tuple[Speaker, PreparedLine | TextError]]:
        """Encoder + durations for all new lines, one batch per voice (lock NOT held)."""
        out: list[tuple[Speaker, PreparedLine | TextError]] = []
        for voice, items in work.items():
            model = self.voices[voice].model
            phonemes = [p for _, p in items]
            speeds = [sp.stream.controls.speed for sp, _ in items]
            with torch.inference_mode():
                try:
                    lines: list[PreparedLine | TextError] = list(model.prepare_batch(phonemes, speeds=speeds))
                except TextError:  # one bad line: find it, keep the others
                    lines = []
                    for p, speed in zip(phonemes, speeds, strict=True):
                        try:
                            lines.append(model.prepare(p, speed=speed))
                        except TextError as e:
                            lines.append(e)
            out.extend((sp, line) for (sp, _), line in zip(items, lines, strict=True))
        return out

    def _attach(self, prepared: list[tuple[Speaker, PreparedLine | TextError]]) -> None:
        for sp, line in prepared:
            if self.active.get(sp.stream) is not sp:
                continue  # closed while preparing
            if isinstance(line, TextError):
                if sp.gen == 0 and sp.line is None and not sp.prepared:
                    self.active.pop(sp.stream)
                    self._release(sp)
                    sp.stream.fail(line)
                else:
                    log.warning("stream %r: skipped a line the voice cannot speak: %s", sp.stream.request_id, line)
                continue
            sp.prepared.append(line)

    def _advance(self, now: float) -> None:
        """Cancel, start the next line, or complete, for every stream between frames."""
        for sp in list(self.active.values()):
            has_lines, ended, cancelled, _ = sp.stream.input_state()
            if cancelled:
                if sp.line is not None and sp.gen > 0:
                    sp.fading = True  # one more frame, faded to zero, this tick
                else:
                    self._finish(sp, "cancelled", now)
                continue
            while sp.line is None and sp.prepared:
                if self._start_line(sp, now):
                    break
            if sp.line is None and not sp.prepared and ended and not has_lines:
                self._finish(sp, "completed", now)

    def _start_line(self, sp: Speaker, now: float) -> bool:
        line = sp.prepared.popleft()
        if line.n_frames == 0:
            self.counters.lines_completed += 1
            return False
        k = self.config.frames_per_tick
        vr = self.voices[sp.voice]
        pad = -line.n_frames % k  # silence frames so every tick reads exactly K frames
        cond = line.cond if pad == 0 else torch.cat([line.cond, vr.silence.expand(pad, -1)])
        sp.begin_line(line, vr.arena.alloc(cond), now)
        return True

    def _choose(self, now: float) -> dict[str, list[Speaker]]:
        lookahead = self.config.lookahead_ms / 1000.0
        due: list[Speaker] = []
        for sp in self.active.values():
            if sp.line is None:
                continue
            ahead = sp.ahead_s(now)
            if ahead is not None and not sp.fading:
                if ahead < 0.0 and not sp.behind:
                    self.counters.underruns += 1
                sp.behind = ahead < 0.0
            if sp.fading or ahead is None or ahead < lookahead:
                due.append(sp)
        if len(due) > self.max_batch:
            due.sort(key=lambda s: -math.inf if s.fading else s.deadline())
            due = due[: self.max_batch]
        batches: dict[str, list[Speaker]] = {}
        for sp in due:
            batches.setdefault(sp.voice, []).append(sp)
        return batches

    def _gather(self, vr: VoiceRuntime, rows: list[Speaker]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = self.config.frames_per_tick
        cond = vr.arena.gather([sp.page(k) for sp in rows])  # [B, K, d_cond]
        controls = torch.tensor([sp.controls for sp in rows], dtype=torch.float32)  # [B, 4]
        slots = torch.tensor([sp.slot for sp in rows], dtype=torch.int64)  # [B]
        return slots.to(self.device, non_blocking=True), cond, controls.to(self.device, non_blocking=True)

    def _render(self, rows: list[Speaker], pcm: np.ndarray, now: float) -> list[list[Event]]:
        """Per row: marks, trimmed (or faded) and resampled audio. Lock NOT held: only the engine
        thread touches a Speaker's clocks and resampler; a row closed meanwhile is dropped later."""
        k = self.config.frames_per_tick
        return [sp.render(pcm[i], k, now) for i, sp in enumerate(rows)]

    def _distribute(self, rows: list[Speaker], events: list[list[Event]], now: float) -> None:
        for sp, row_events in zip(rows, events, strict=True):
            if self.active.get(sp.stream) is not sp:
                continue  # closed during the step: its audio goes nowhere
            sp.stream.push(row_events, self._wakeups)
            if sp.fading:
                self.counters.lines_cancelled += 1
                self._finish(sp, "cancelled", now)
            elif sp.pos >= sp.n_frames:
                self.counters.lines_completed += 1
                self._end_line(sp)
                has_lines, ended, cancelled, _ = sp.stream.input_state()
                if not sp.prepared and ended and not has_lines and not cancelled:
                    self._finish(sp, "completed", now)

    def _finish(self, sp: Speaker, reason: str, now: float) -> None:
        events: list[Event] = []
        tail = sp.flush()
        if tail is not None:
            events.append(tail)
        events.append(sp.end_event(reason, now))
        self.active.pop(sp.stream, None)
        self._release(sp)
        sp.stream.push(events, self._wakeups)

    def _end_line(self, sp: Speaker) -> None:
        self.voices[sp.voice].arena.release(sp.pages)
        sp.pages = []
        sp.line = None

    def _release(self, sp: Speaker) -> None:
        """The stream is over: its line's pages and its slot go back (the state stays resident)."""
        self._end_line(sp)
        if self.speaking.get(sp.stream.character) is sp:
            del self.speaking[sp.stream.character]
        self.voices[sp.voice].pool.release(sp.stream.character)

    def _next_due(self, now: float) -> float | None:
        times: list[float] = []
        lookahead = self.config.lookahead_ms / 1000.0
        for sp in self.active.values():
            if sp.line is not None and sp.anchor_t is not None:
                times.append(sp.deadline() - lookahead)
        times.extend(s.opened_at + self.config.max_queue_wait_s for s in self.waiting)
        if not times:
            return None
        return max(0.0005, min(times) - now)
