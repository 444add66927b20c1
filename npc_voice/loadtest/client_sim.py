"""Simulated game clients: N characters talking to a running daemon over gRPC (asyncio).

Each simulated character ("guard/17", spread over the daemon's configured
characters) runs one role for the whole test:

- barker: short lines via Speak, a pause, the next line; a fraction of lines is
  cancelled mid-line (player walks away: the Cancel RPC);
- talker: multi-sentence turns via Converse, text arriving in small pieces like
  an LLM writes it; a fraction of turns is cancelled with the Converse cancel;
- slow reader (mixed scenario): a barker whose client reads at half real time,
  to check that flow control keeps it from hurting everyone else.

In the mixed scenario, halfway through, every idle barker starts a line in the
same instant (a crowd reacting to one event: the burst).

- continuous: every character speaks lines back to back (Speak, no pause, no
  cancels): the steady real-time capacity test;
- churn: a quarter of the characters (at least one) are steady speakers (lines
  back to back); the others open a line on a fresh instance of their own and drop
  it at once — the call cancelled right after StreamStart or after the first
  chunk, a 50-300 ms deadline, or a Cancel RPC after the first chunk — like a
  game whose players skip dialogue. Every steady line must complete normally.

Every stream is played against a real-time clock through a ``JitterBuffer``.
Records are plain dataclasses; ``report.py`` turns them into numbers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from npc_voice.client import routing_metadata
from npc_voice.loadtest.lines import BARKS, CONVERSATIONS, llm_pieces
from npc_voice.loadtest.playback import JitterBuffer
from npc_voice.v1 import npc_voice_pb2 as pb
from npc_voice.v1 import npc_voice_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SCENARIOS = ("barks", "conversation", "mixed", "continuous", "churn")
CHURN_MODES = ("after_start", "after_first_chunk", "deadline", "cancel_rpc")
_BYTES_PER_SAMPLE = {pb.PCM_S16LE: 2, pb.PCM_F32LE: 4}
LOOP_WATCH_S = 0.01  # the event-loop watcher's sleep
LOOP_STALL_S = 0.02  # waking this much later than asked counts as a stall of this load generator
_PHRASE_END = re.compile(r"[.!?;:,]\s")  # where the daemon's Converse cuts a phrase (see server/converse.py)


@dataclass(frozen=True)
class SimConfig:
    server: str  # host:port
    streams: int  # simulated characters, each with at most one line in flight
    duration_s: float  # new lines start only before this; lines in flight then finish
    scenario: str = "mixed"  # barks | conversation | mixed
    jitter_ms: float = 100.0  # client playback pre-buffer
    sample_rate: int = 0  # requested output rate; 0 = the character's default
    token: str | None = None  # bearer token, when the daemon requires one
    tls_ca: str | None = None  # PEM file of the CA that signed the daemon's certificate: connect with TLS
    seed: int = 0
    cancel_fraction: float = 0.1  # lines the player walks away from, mid-line
    slow_reader_fraction: float | None = None  # None = 0.05 in mixed, 0 otherwise
    burst: bool | None = None  # None = on in mixed
    pause_s: tuple[float, float] = (0.3, 1.5)  # idle time between a barker's lines
    words_per_s: float = 12.0  # how fast a talker's text arrives (an LLM is faster than speech)
    stats_interval_s: float = 0.5
    grace_s: float = 20.0  # after duration_s, how long lines in flight may take to finish
    progress: bool = True  # live one-line progress on stderr

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        if self.streams < 1:
            raise ValueError(f"streams must be >= 1, got {self.streams}")
        if self.duration_s <= 0:
            raise ValueError(f"duration must be > 0 s, got {self.duration_s}")
        for name in ("cancel_fraction", "slow_reader_fraction"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in 0..1, got {v}")

    @property
    def slow_readers(self) -> float:
        if self.slow_reader_fraction is not None:
            return self.slow_reader_fraction
        return 0.05 if self.scenario == "mixed" else 0.0

    @property
    def with_burst(self) -> bool:
        return self.scenario == "mixed" if self.burst is None else self.burst


@dataclass
class LineRecord:
    """One line (Speak) or one conversation turn (Converse) as the client saw it."""

    kind: str  # bark | conversation | slow_reader
    character: str
    t_sent: float  # s since the test started: Speak sent / first text piece written
    t_ref: float  # latency reference: Speak sent / the piece that completed the first phrase
    t_first_audio: float | None = None
    t_end: float | None = None
    sample_rate: int = 0
    samples: int = 0
    outcome: str = "unfinished"  # completed | cancelled | interrupted | dropped | rejected | failed | unfinished
    error: str = ""  # gRPC status code name for rejected/failed
    cancel_requested: bool = False
    burst: bool = False  # started by the burst
    underruns: int = 0
    stall_s: float = 0.0
    dry_at: list[float] = field(default_factory=list)  # when each underrun ran dry (s since the test started)
    gaps_s: list[float] = field(default_factory=list)
    # the daemon's own account (StreamEnd.timings), from the request's arrival: its wait for
    # admission, and its first audio chunk sent (0 / None where the stream had none)
    server_queued_ms: float | None = None
    server_first_audio_ms: float | None = None

    def end(self, end: pb.StreamEnd) -> None:
        """Record a StreamEnd: the outcome and the daemon's timings."""
        self.outcome = _END_OUTCOMES.get(end.reason, "completed")
        if end.HasField("timings"):
            self.server_queued_ms = end.timings.queued_ms
            if end.timings.first_audio_ms > 0.0:
                self.server_first_audio_ms = end.timings.first_audio_ms

    @property
    def first_audio_ms(self) -> float | None:
        return None if self.t_first_audio is None else (self.t_first_audio - self.t_ref) * 1000.0

    @property
    def audio_s(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class StatsSample:
    t: float  # s since the test started
    active_streams: int
    slots_in_use: int
    slots_total: int
    underruns: int  # the daemon's own counter
    tick_ms_mean: float
    tick_ms_p99: float
    client_in_flight: int  # lines this client has started and not yet seen end


@dataclass
class SimResult:
    config: SimConfig
    characters: list[str]  # the daemon's configured characters used as templates
    lines: list[LineRecord]
    stats: list[StatsSample]
    wall_s: float  # from start to the last line's end
    final_stats: dict[str, float | int | str]
    client_cpu_s: float = 0.0  # CPU seconds this load generator itself used (it shares the machine)
    settled_s: float | None = None  # after the last line, until the daemon had no active stream (None: not in 10 s)
    # [start, end] (s since the test started) of each moment this load generator's event loop ran
    # LOOP_STALL_S or more late: on a machine it shares with the daemon, audio that arrived then was
    # read late whatever the daemon did
    loop_stalls: list[tuple[float, float]] = field(default_factory=list)
    daemon_underruns: int | None = None  # the daemon's own underrun count over the run (GetStats before and after)
    daemon_late_audio: int | None = None  # audio chunks its gRPC edge took after they were due, over the run


class Simulation:
    """Runs one load test; ``await Simulation(cfg).run()`` -> SimResult."""

    def __init__(self, cfg: SimConfig, on_progress: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.lines: list[LineRecord] = []
        self.stats: list[StatsSample] = []
        self.t0 = 0.0
        self.burst_event = asyncio.Event()
        self._metadata = (("authorization", f"Bearer {cfg.token}"),) if cfg.token else None
        self._on_progress = on_progress or _stderr_progress
        self._stub: pb_grpc.NpcVoiceStub | None = None
        self.loop_stalls: list[tuple[float, float]] = []

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def _meta(self, character: str) -> tuple[tuple[str, str], ...]:
        """Call metadata: the token, and x-npc-character so a proxy routes by character."""
        return (self._metadata or ()) + routing_metadata(character)

    @property
    def stub(self) -> pb_grpc.NpcVoiceStub:
        assert self._stub is not None, "run() opens the channel"
        return self._stub

    async def run(self) -> SimResult:
        cfg = self.cfg
        options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
        if cfg.tls_ca:
            with open(cfg.tls_ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            channel = grpc.aio.secure_channel(cfg.server, creds, options=options)
        else:
            channel = grpc.aio.insecure_channel(cfg.server, options=options)
        async with channel:
            self._stub = pb_grpc.NpcVoiceStub(channel)
            listing = await self.stub.ListCharacters(pb.ListCharactersRequest(), metadata=self._metadata, timeout=10)
            names = [c.name for c in listing.characters] or [listing.default_character or ""]
            before = await self.stub.GetStats(pb.GetStatsRequest(), metadata=self._metadata, timeout=10)
            self.t0 = time.perf_counter()
            cpu0 = time.process_time()
            stop = asyncio.Event()
            poller = asyncio.create_task(self._poll_stats(stop))
            watcher = asyncio.create_task(self._watch_loop(stop))
            progress = asyncio.create_task(self._progress(stop)) if cfg.progress else None
            tasks = [asyncio.create_task(self._character(i, names)) for i in range(cfg.streams)]
            if cfg.with_burst:
                asyncio.get_running_loop().call_later(cfg.duration_s / 2, self.burst_event.set)
            _, pending = await asyncio.wait(tasks, timeout=cfg.duration_s + cfg.grace_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            wall = self.now()
            client_cpu = time.process_time() - cpu0
            stop.set()
            await asyncio.gather(poller, watcher, *([progress] if progress else []), return_exceptions=True)
            final, settled_s = await self._settled_stats()
        if cfg.progress:
            sys.stderr.write("\n")
        final_stats = {f.name: v for f, v in final.ListFields()}
        return SimResult(cfg, names, self.lines, self.stats, wall, final_stats, client_cpu, settled_s,
                         self.loop_stalls, max(0, final.underruns - before.underruns),
                         max(0, final.late_audio - before.late_audio))

    # -- one simulated character -------------------------------------------------------------

    async def _character(self, index: int, names: list[str]) -> None:
        cfg = self.cfg
        rng = random.Random(cfg.seed * 1_000_003 + index)
        character = f"{names[index % len(names)]}/{index}"
        role = self._role(index, rng)
        await asyncio.sleep(rng.uniform(0.0, min(2.0, cfg.duration_s / 4)))  # staggered arrival
        woke_by_burst = False  # this character was idle at the burst and starts its line in that instant
        if role in ("continuous", "steady", "churn"):
            await self._back_to_back(role, character, rng)
            return
        while self.now() < cfg.duration_s:
            cancel = rng.random() < cfg.cancel_fraction
            if role == "conversation":
                await self._converse(character, rng.choice(CONVERSATIONS), cancel, rng, woke_by_burst)
            else:
                await self._speak(role, character, rng.choice(BARKS), cancel, rng, woke_by_burst)
            woke_by_burst = False
            pause = rng.uniform(*cfg.pause_s)
            if cfg.with_burst and not self.burst_event.is_set():
                try:
                    await asyncio.wait_for(self.burst_event.wait(), pause)
                    woke_by_burst = True
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(pause)

    def _role(self, index: int, rng: random.Random) -> str:
        scenario = self.cfg.scenario
        if scenario in ("continuous", "churn"):
            if scenario == "continuous":
                return "continuous"
            return "steady" if index < max(1, self.cfg.streams // 4) else "churn"
        if scenario == "barks":
            return "slow_reader" if rng.random() < self.cfg.slow_readers else "bark"
        if scenario == "conversation":
            return "conversation"
        r = rng.random()
        if r < self.cfg.slow_readers:
            return "slow_reader"
        return "conversation" if r < self.cfg.slow_readers + 0.3 else "bark"

    async def _back_to_back(self, role: str, character: str, rng: random.Random) -> None:
        """Lines with no pause (continuous, steady), or lines dropped at once (churn)."""
        n = 0
        while self.now() < self.cfg.duration_s:
            n += 1
            if role == "churn":
                await self._churn(f"{character}-{n}", rng.choice(BARKS), rng)
                await asyncio.sleep(rng.uniform(0.02, 0.2))
            else:
                await self._speak(role, character, rng.choice(BARKS), False, rng, False)

    def _new_line(
        self, kind: str, character: str, text: str, burst: bool = False
    ) -> tuple[LineRecord, pb.SpeakRequest]:
        """A record of the line (sent now) and its SpeakRequest (s16 at the configured rate)."""
        t = self.now()
        rec = LineRecord(kind=kind, character=character, t_sent=t, t_ref=t, burst=burst)
        self.lines.append(rec)
        request = pb.SpeakRequest(
            character=character,
            text=text,
            format=pb.AudioFormat(encoding=pb.PCM_S16LE, sample_rate_hz=self.cfg.sample_rate),
            request_id=f"lt-{character}-{len(self.lines)}",
        )
        return rec, request

    async def _churn(self, character: str, text: str, rng: random.Random) -> None:
        mode = rng.choice(CHURN_MODES)
        rec, request = self._new_line("churn", character, text)
        timeout = rng.uniform(0.05, 0.3) if mode == "deadline" else self.cfg.duration_s + self.cfg.grace_s
        call = self.stub.Speak(request, metadata=self._meta(character), timeout=timeout)
        try:
            async for resp in call:
                event = resp.WhichOneof("event")
                if event == "audio" and rec.t_first_audio is None:
                    rec.t_first_audio = self.now()
                if (event == "start" and mode == "after_start") or (event == "audio" and mode == "after_first_chunk"):
                    call.cancel()  # the client goes away mid-stream
                    rec.outcome = "dropped"
                    break
                if event == "audio" and mode == "cancel_rpc" and not rec.cancel_requested:
                    rec.cancel_requested = True
                    await self.stub.Cancel(pb.CancelRequest(character=character), metadata=self._meta(character),
                                           timeout=10)
                elif event == "end":
                    rec.end(resp.end)
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                rec.outcome = "dropped"
            else:
                rec.error = code.name
                rec.outcome = "rejected" if code == grpc.StatusCode.RESOURCE_EXHAUSTED else "failed"
        except asyncio.CancelledError:
            call.cancel()
            raise
        rec.t_end = self.now()

    async def _speak(self, kind: str, character: str, text: str, cancel: bool, rng: random.Random, burst: bool) -> None:
        rec, request = self._new_line(kind, character, text, burst)
        cancel_after_s = rng.uniform(0.2, 0.8) if cancel else None
        call = self.stub.Speak(request, metadata=self._meta(character), timeout=self.cfg.duration_s + self.cfg.grace_s)
        await self._consume(call, rec, cancel_after_s, slow=kind == "slow_reader")

    async def _converse(self, character: str, text: str, cancel: bool, rng: random.Random, burst: bool) -> None:
        t = self.now()
        rec = LineRecord(kind="conversation", character=character, t_sent=t, t_ref=t, burst=burst)
        self.lines.append(rec)
        # One character per Converse call: the header routes the whole call.
        call = self.stub.Converse(metadata=self._meta(character), timeout=self.cfg.duration_s + self.cfg.grace_s)
        writer = asyncio.create_task(self._write_turn(call, rec, character, text, cancel, rng))
        try:
            await self._consume(call, rec, None, slow=False)
        finally:
            if not writer.done():
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _write_turn(
        self,
        call: grpc.aio.StreamStreamCall,
        rec: LineRecord,
        character: str,
        text: str,
        cancel: bool,
        rng: random.Random,
    ) -> None:
        fmt = pb.AudioFormat(encoding=pb.PCM_S16LE, sample_rate_hz=self.cfg.sample_rate)
        await call.write(
            pb.ConverseRequest(context_id="turn", config=pb.ConverseConfig(character=character, format=fmt))
        )
        gap_s = 2.0 / self.cfg.words_per_s  # two words per piece
        written = ""
        first_phrase_seen = False
        for piece in llm_pieces(text):
            await call.write(pb.ConverseRequest(context_id="turn", text=piece))
            written += piece
            if not first_phrase_seen and _PHRASE_END.search(written):
                rec.t_ref = self.now()  # the first phrase is complete: the daemon can speak from here
                first_phrase_seen = True
            await asyncio.sleep(gap_s * rng.uniform(0.5, 1.5))
        if cancel:
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            rec.cancel_requested = True
            await call.write(pb.ConverseRequest(context_id="turn", cancel=True))
        else:
            await call.write(pb.ConverseRequest(context_id="turn", close=True))
        await call.done_writing()

    async def _consume(
        self,
        call: grpc.aio.UnaryStreamCall | grpc.aio.StreamStreamCall,
        rec: LineRecord,
        cancel_after_s: float | None,
        slow: bool,
    ) -> None:
        """Read one call to its end, feeding the jitter buffer; cancel mid-line if asked."""
        buf: JitterBuffer | None = None
        bps = 2
        cancel_task: asyncio.Task[None] | None = None
        try:
            async for resp in call:
                event = resp.WhichOneof("event")
                t = self.now()
                if event == "start":
                    rec.sample_rate = resp.start.format.sample_rate_hz
                    bps = _BYTES_PER_SAMPLE.get(resp.start.format.encoding, 2)
                    buf = JitterBuffer(rec.sample_rate, self.cfg.jitter_ms / 1000.0)
                elif event == "audio" and buf is not None:
                    n = len(resp.audio.pcm) // bps
                    if rec.t_first_audio is None:
                        rec.t_first_audio = t
                    buf.on_chunk(t, n)
                    rec.samples += n
                    if cancel_after_s is not None and cancel_task is None and buf.audio_s >= cancel_after_s:
                        rec.cancel_requested = True
                        cancel_task = asyncio.create_task(self._cancel(rec))
                    if slow:  # read at half real time: the daemon must buffer or apply flow control
                        await asyncio.sleep(2.0 * n / rec.sample_rate)
                elif event == "end":
                    rec.t_end = t
                    rec.end(resp.end)
                    if buf is not None:
                        buf.on_end(t)
        except grpc.aio.AioRpcError as e:
            rec.t_end = self.now()
            code = e.code()
            rec.error = code.name
            rec.outcome = "rejected" if code == grpc.StatusCode.RESOURCE_EXHAUSTED else "failed"
            if rec.outcome == "failed":
                log.debug("%s %s failed: %s %s", rec.kind, rec.character, code.name, e.details())
        except asyncio.CancelledError:
            call.cancel()
            raise
        finally:
            if buf is not None:
                rec.underruns, rec.stall_s, rec.gaps_s = buf.underruns, buf.stall_s, buf.chunk_gaps_s()
                rec.dry_at = buf.dry_at
            if cancel_task is not None:
                await asyncio.gather(cancel_task, return_exceptions=True)

    async def _cancel(self, rec: LineRecord) -> None:
        req = pb.CancelRequest(character=rec.character)
        await self.stub.Cancel(req, metadata=self._meta(rec.character), timeout=10)

    # -- observers ------------------------------------------------------------------------------

    async def _settled_stats(self, bound_s: float = 10.0) -> tuple[pb.GetStatsResponse, float | None]:
        """The daemon's stats once it has no active or waiting stream (or after ``bound_s``)."""
        t0 = time.perf_counter()
        while True:
            s = await self.stub.GetStats(pb.GetStatsRequest(), metadata=self._metadata, timeout=10)
            waited = time.perf_counter() - t0
            if s.active_streams == 0 and s.streams_waiting == 0:
                return s, waited
            if waited > bound_s:
                return s, None
            await asyncio.sleep(0.05)

    async def _poll_stats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                s = await self.stub.GetStats(pb.GetStatsRequest(), metadata=self._metadata, timeout=5)
                in_flight = sum(1 for r in self.lines if r.t_end is None)
                self.stats.append(
                    StatsSample(
                        self.now(),
                        s.active_streams,
                        s.slots_in_use,
                        s.slots_total,
                        s.underruns,
                        s.tick_ms_mean,
                        s.tick_ms_p99,
                        in_flight,
                    )
                )
            except grpc.aio.AioRpcError as e:
                log.warning("GetStats failed: %s", e.code().name)
            try:
                await asyncio.wait_for(stop.wait(), self.cfg.stats_interval_s)
            except asyncio.TimeoutError:
                pass

    async def _watch_loop(self, stop: asyncio.Event) -> None:
        """Note each moment this process's event loop wakes LOOP_STALL_S or more late (its CPU taken
        by the daemon, another program or the hypervisor, or by its own work): audio due then is
        read late here, whatever the daemon sent."""
        while not stop.is_set():
            t = self.now()
            await asyncio.sleep(LOOP_WATCH_S)
            woke = self.now()
            if woke - t - LOOP_WATCH_S >= LOOP_STALL_S:
                self.loop_stalls.append((t + LOOP_WATCH_S, woke))

    async def _progress(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._on_progress(self.progress_line())
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        self._on_progress(self.progress_line())

    def progress_line(self) -> str:
        done = [r for r in self.lines if r.t_end is not None]
        by = {k: sum(1 for r in done if r.outcome == k) for k in ("completed", "cancelled", "rejected", "failed")}
        active = len(self.lines) - len(done)
        lat = sorted(v for r in self.lines if (v := r.first_audio_ms) is not None)
        p50 = f"{lat[len(lat) // 2]:.0f}" if lat else "-"
        p99 = f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.0f}" if lat else "-"
        underruns = sum(r.underruns for r in done if r.kind != "slow_reader")
        slots = f"{self.stats[-1].slots_in_use}/{self.stats[-1].slots_total}" if self.stats else "-"
        return (
            f"[{min(self.now(), 9999):5.1f}/{self.cfg.duration_s:g}s] active {active} done {by['completed']} "
            f"cancel {by['cancelled']} rej {by['rejected']} fail {by['failed']} | first audio p50 {p50} "
            f"p99 {p99} ms | underruns {underruns} | slots {slots}"
        )


_END_OUTCOMES = {pb.END_REASON_CANCELLED: "cancelled", pb.END_REASON_INTERRUPTED: "interrupted"}


def _stderr_progress(line: str) -> None:
    sys.stderr.write("\r" + line[:118].ljust(118))
    sys.stderr.flush()
