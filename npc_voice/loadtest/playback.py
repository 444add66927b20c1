"""What a game client hears: a jitter buffer played against a real-time clock.

Pure bookkeeping, no I/O: feed it chunk arrival times and sizes, it says when
playback started, how often audio ran out before the stream ended (underruns)
and for how long playback stalled.

Model: playback starts once the buffer holds ``prebuffer_s`` of audio (or the
stream has ended), then consumes at exactly 1x. If the buffer runs dry before
the stream's end, that is one underrun; playback pauses and restarts, like a
real player, when the buffer again holds ``prebuffer_s`` (or the stream ends).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

# Arrival clocks are floats in seconds; a chunk that arrives within this much of
# the moment the buffer would run dry is on time (float noise, not an underrun).
_EPS_S = 1e-6


@dataclass
class JitterBuffer:
    """Playback of one stream. Times are seconds on any monotonic clock."""

    sample_rate: int
    prebuffer_s: float = 0.1
    received: int = 0  # samples received so far
    underruns: int = 0  # times the buffer ran dry before the stream ended
    stall_s: float = 0.0  # total time playback waited after an underrun
    first_play_t: float | None = None  # when playback first started
    dry_at: list[float] = field(default_factory=list)  # when each underrun's buffer ran dry
    ended: bool = False
    _playing: bool = False
    _pos_at_start: int = 0  # playback position (samples) when the current run started
    _run_start_t: float = 0.0
    _stalled_since: float | None = None
    _arrivals: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.prebuffer_s < 0:
            raise ValueError(f"prebuffer_s must be >= 0, got {self.prebuffer_s}")

    def _run_dry_at(self) -> float:
        """When the current run consumes the last received sample."""
        return self._run_start_t + (self.received - self._pos_at_start) / self.sample_rate

    def _advance_to(self, t: float) -> None:
        """Detect an underrun between the last event and ``t``."""
        if self._playing and not self.ended:
            dry = self._run_dry_at()
            if dry < t - _EPS_S:
                self.underruns += 1
                self.dry_at.append(dry)
                self._playing = False
                self._pos_at_start = self.received  # everything received has been played
                self._stalled_since = dry

    def _maybe_start(self, t: float) -> None:
        if self._playing:
            return
        buffered = self.received - self._pos_at_start
        if buffered <= 0 and not self.ended:
            return
        if buffered >= self.prebuffer_s * self.sample_rate or self.ended:
            self._playing = True
            self._run_start_t = t
            if self.first_play_t is None:
                self.first_play_t = t
            if self._stalled_since is not None:
                self.stall_s += t - self._stalled_since
                self._stalled_since = None

    def on_chunk(self, t: float, n_samples: int) -> None:
        """``n_samples`` of audio arrived at time ``t`` (non-decreasing)."""
        if self.ended:
            raise ValueError("chunk after the end of the stream")
        if self._arrivals and t < self._arrivals[-1]:
            raise ValueError(f"arrival times must not decrease: {t} after {self._arrivals[-1]}")
        self._advance_to(t)
        self.received += n_samples
        self._arrivals.append(t)
        self._maybe_start(t)

    def on_end(self, t: float) -> None:
        """The stream ended at ``t``: what is buffered plays out, no more underruns."""
        self._advance_to(t)
        self.ended = True
        self._maybe_start(t)

    @property
    def audio_s(self) -> float:
        return self.received / self.sample_rate

    def chunk_gaps_s(self) -> list[float]:
        """Times between consecutive chunk arrivals."""
        a = self._arrivals
        return [b - x for x, b in zip(a, a[1:], strict=False)]


def dry_in_stalls(dry_at: list[float], stalls: list[tuple[float, float]]) -> int:
    """How many of the moments ``dry_at`` fall inside one of the ``stalls`` ([start, end] intervals,
    sorted by start, not overlapping): underruns the client could not have heard on time whatever
    the daemon did, since at that moment it was not reading at all."""
    starts = [a for a, _ in stalls]
    n = 0
    for t in dry_at:
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0 and t <= stalls[i][1]:
            n += 1
    return n


def percentiles(values: list[float], qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float | None]:
    """{"p50": .., "p95": .., "p99": .., "max": .., "mean": .., "count": n}; None values when empty.

    Linear interpolation between closest ranks (numpy's default)."""
    out: dict[str, float | None] = {}
    if not values:
        out.update({f"p{q:g}": None for q in qs})
        out.update(max=None, mean=None, count=0)
        return out
    arr = np.asarray(values, dtype=np.float64)
    for q, v in zip(qs, np.percentile(arr, qs), strict=True):
        out[f"p{q:g}"] = float(v)
    out.update(max=float(arr.max()), mean=float(arr.mean()), count=len(values))
    return out
