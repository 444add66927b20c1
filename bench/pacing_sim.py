"""Pacing policies, simulated: how many model calls, how full, how much engine time.

    .venv/bin/python bench/pacing_sim.py [--streams 16 32 48 64 80] [--call-ms 5.3] [--row-ms 0.76]

A model of the engine's scheduling, not the engine: N clients speak lines back to back (0.8-2.2 s
of audio each, the next sent 50 ms after the previous one has played), and a model call over B
streams costs ``call_ms + B * row_ms`` of engine time (fit on this VM with
``bench/model_step_cost.py --threads 1 --batches 1 4 16 32 64 --frames 8 --cpu-time``; K = 8).
Two policies:

- ``lead`` — what ``EngineCore._choose`` does: a tick runs when a stream is less than
  ``lookahead`` ahead of its playback clock (or a new line waits for its first piece); it steps
  every stream less than ``lookahead + slack`` ahead, most urgent first, in pieces of at most
  32 rows; a piece while new lines wait holds at most 16 rows (the new lines first).
- ``beat`` — a global tick every K frames of audio: each beat steps every speaking stream less than
  ``lookahead + K frames`` ahead (in steady state all of them, once per beat, so their phases stay
  aligned); a new line's first piece runs at once, alone, and a line still under ``lookahead``
  after its beat gets one catch-up piece.

Printed per policy: engine busy share (seconds of model time per second), calls, rows per call,
batch fill (rows / speaking streams of the ticks that were due), streams found behind their
playback clock, and the largest lead. Modelled figures: they compare policies; the load test
measures the engine.
"""
from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field

FRAME_S = 256 / 22050
PIECE, FIRST_ROWS = 32, 16


@dataclass
class Line:
    length: float  # seconds of audio
    gen: float = 0.0  # seconds generated
    anchor: float | None = None  # when its first audio went out (playback clock start)

    def ahead(self, now: float) -> float:
        assert self.anchor is not None
        return self.gen - (now - self.anchor)


@dataclass
class Client:
    next_at: float
    line: Line | None = None


@dataclass
class Sim:
    streams: int
    call_s: float
    row_s: float
    k: int = 8
    lookahead: float = 0.150
    slack: float = 0.300
    seed: int = 0
    now: float = 0.0
    busy: float = 0.0
    calls: int = 0
    rows: int = 0
    behind: int = 0
    lead_max: float = 0.0
    fills: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.tick_s = self.k * FRAME_S
        self.clients = [Client(self.rng.uniform(0.0, 1.5)) for _ in range(self.streams)]

    def arrivals(self) -> None:
        for c in self.clients:
            if c.line is None and c.next_at <= self.now:
                c.line = Line(self.rng.uniform(0.8, 2.2))

    def speaking(self) -> list[Client]:
        return [c for c in self.clients if c.line is not None]

    def step(self, rows: list[Client]) -> None:
        cost = self.call_s + self.row_s * len(rows)
        self.now += cost
        self.busy += cost
        self.calls += 1
        self.rows += len(rows)
        for c in rows:
            line = c.line
            assert line is not None
            if line.anchor is None:
                line.anchor = self.now
            line.gen += self.tick_s
            self.lead_max = max(self.lead_max, line.ahead(self.now))
        for c in self.clients:  # a line fully generated: the client plays it out, then sends the next
            line = c.line
            if line is not None and line.anchor is not None and line.gen >= line.length:
                c.next_at, c.line = line.anchor + line.gen + 0.05, None

    def idle_until(self, times: list[float]) -> None:
        self.now = max(self.now + 1e-4, min(times)) if times else self.now + 0.01

    def count_behind(self, speaking: list[Client]) -> None:
        self.behind += sum(1 for c in speaking if c.line and c.line.anchor is not None and c.line.ahead(self.now) < 0)

    def run_lead(self, duration: float) -> None:
        while self.now < duration:
            self.arrivals()
            speaking = self.speaking()
            self.count_behind(speaking)
            fresh = [c for c in speaking if c.line and c.line.anchor is None]
            rows, due = list(fresh), False
            for c in speaking:
                line = c.line
                if line is None or line.anchor is None:
                    continue
                ahead = line.ahead(self.now)
                due = due or ahead < self.lookahead
                if ahead < self.lookahead + self.slack:
                    rows.append(c)
            if not (due or fresh):
                waits = [c.next_at for c in self.clients if c.line is None]
                waits += [c.line.anchor + c.line.gen - self.lookahead for c in speaking
                          if c.line and c.line.anchor is not None]
                self.idle_until(waits)
                continue
            limit = min(PIECE, max(len(fresh), FIRST_ROWS)) if fresh else PIECE
            rows.sort(key=lambda c: -1e9 if c.line is None or c.line.anchor is None else c.line.anchor + c.line.gen)
            rows = rows[:limit]
            if due:
                self.fills.append(min(len(rows), PIECE) / min(len(speaking), PIECE))
            self.step(rows)

    def run_beat(self, duration: float) -> None:
        beat = 0.0
        while self.now < duration:
            self.arrivals()
            fresh = [c for c in self.speaking() if c.line and c.line.anchor is None]
            if fresh:
                self.step(fresh[:PIECE])
                continue
            if self.now < beat:
                self.idle_until([beat] + [c.next_at for c in self.clients if c.line is None])
                continue
            speaking = self.speaking()
            self.count_behind(speaking)
            rows = [c for c in speaking if c.line and c.line.ahead(self.now) < self.lookahead + self.tick_s]
            if rows:
                self.fills.append(min(len(rows), PIECE) / min(len(speaking), PIECE))
                for i in range(0, len(rows), PIECE):
                    self.step(rows[i : i + PIECE])
                late = [c for c in rows if c.line and c.line.ahead(self.now) < self.lookahead]
                if late:
                    self.step(late[:PIECE])
            beat = max(beat + self.tick_s, self.now)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, nargs="+", default=[16, 32, 48, 64, 80])
    p.add_argument("--call-ms", type=float, default=5.3, help="fixed engine time per model call")
    p.add_argument("--row-ms", type=float, default=0.76, help="engine time per stream in a call (K frames)")
    p.add_argument("--duration", type=float, default=60.0)
    a = p.parse_args()
    print(f"{'N':>4} {'policy':6} {'busy':>5} {'calls':>6} {'rows/call':>9} {'fill':>5} {'behind':>6} {'lead max':>8}")
    for n in a.streams:
        for policy in ("lead", "beat"):
            sim = Sim(n, a.call_ms / 1000, a.row_ms / 1000)
            (sim.run_lead if policy == "lead" else sim.run_beat)(a.duration)
            fill = sum(sim.fills) / len(sim.fills) if sim.fills else 0.0
            print(f"{n:4d} {policy:6} {sim.busy / sim.now:5.2f} {sim.calls:6d} {sim.rows / sim.calls:9.1f} "
                  f"{fill:5.2f} {sim.behind:6d} {sim.lead_max * 1000:6.0f} ms")


if __name__ == "__main__":
    main()
