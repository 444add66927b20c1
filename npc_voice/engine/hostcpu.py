"""The whole machine's CPU time from /proc/stat: busy, idle, and stolen by the hypervisor.

The load test reports it beside the daemon's own CPU; the engine's admission watches the stolen
share (``StealMeter``): on a cloud VM a virtual CPU the hypervisor gives to someone else is a
core the engine's step threads cannot count on.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_cpu_seconds(stat_text: str | None = None) -> tuple[float, float, float]:
    """(busy, idle, stolen) CPU seconds of all CPUs since boot, from /proc/stat's "cpu" line:
    busy = user + nice + system + irq + softirq (guest time is inside user), idle = idle +
    iowait, stolen = steal (a virtual CPU ready to run while the hypervisor ran something else)."""
    text = Path("/proc/stat").read_text(encoding="ascii") if stat_text is None else stat_text
    for line in text.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]] + [0] * 8  # old kernels have fewer columns
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            return ((user + nice + system + irq + softirq) / CLOCK_TICKS, (idle + iowait) / CLOCK_TICKS,
                    steal / CLOCK_TICKS)
    raise OSError("/proc/stat has no cpu line")


class StealMeter:
    """The share of the machine's CPU time the hypervisor took recently (0..1): /proc/stat read at
    most every ``every_s``, smoothed over the last few readings. 0.0 where there is no /proc/stat
    (it then stops reading). One owner (the engine thread)."""

    def __init__(self, every_s: float = 0.5, weight: float = 0.5,
                 read: Callable[[], tuple[float, float, float]] = machine_cpu_seconds) -> None:
        self.every_s, self.weight, self._read = every_s, weight, read
        self.share = 0.0
        self._last: tuple[float, float, float] | None = None
        self._at = -1e18
        self._off = False

    def update(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if self._off or now - self._at < self.every_s:
            return self.share
        self._at = now
        try:
            sample = self._read()
        except (OSError, ValueError):
            self._off = True
            return self.share
        if self._last is not None:
            busy, idle, stolen = (b - a for a, b in zip(self._last, sample, strict=True))
            total = busy + idle + stolen
            if total > 0:
                self.share = (1.0 - self.weight) * self.share + self.weight * max(0.0, stolen) / total
        self._last = sample
        return self.share
