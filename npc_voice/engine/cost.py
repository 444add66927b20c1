"""StepCost: a running fit of one voice's step time against batch size, for admission control.

t(B) ~= a + b * B (fixed cost per call + cost per stream), fitted by least squares over recent
(B, t) samples with exponential forgetting, so the estimate follows the machine's load. The
engine admits a new stream only while the fitted cost of one more stream fits in ``max_load``
of the audio a tick produces (``EngineConfig.max_load``; 0 turns this off).
"""
from __future__ import annotations

import math


class StepCost:
    def __init__(self, decay: float = 0.98) -> None:
        self.decay = decay  # weight kept per new sample (0.98: the last ~50 steps dominate)
        self._s = [0.0] * 5  # weighted sums: 1, B, B^2, t, B*t
        self.samples = 0

    def add(self, batch: int, seconds: float) -> None:
        s, b = self._s, float(batch)
        for i, v in enumerate((1.0, b, b * b, seconds, b * seconds)):
            s[i] = s[i] * self.decay + v
        self.samples += 1

    def fit(self) -> tuple[float, float] | None:
        """(a, b) in seconds, or None before any sample."""
        n, sb, sbb, st, sbt = self._s
        if self.samples == 0 or n <= 0.0:
            return None
        den = n * sbb - sb * sb
        if den <= 1e-9 * max(1.0, n * sbb):  # one batch size only: all cost per stream
            return 0.0, st / sb
        b = (n * sbt - sb * st) / den
        a = (st - b * sb) / n
        if b <= 0.0:  # noise: batch size does not show; treat the mean cost as per-call
            return st / n, 0.0
        return max(0.0, a), b

    def predict(self, batch: int, piece: int = 0) -> float:
        """Fitted seconds to step ``batch`` streams (0 before any sample): in calls of at most
        ``piece`` rows when given (the engine's max_batch), each call paying the fixed cost."""
        fitted = self.fit()
        if fitted is None:
            return 0.0
        a, b = fitted
        calls = max(1, math.ceil(batch / piece)) if piece > 0 else 1
        return a * calls + b * batch

    def capacity(self, budget_s: float) -> float:
        """Streams whose step fits in ``budget_s`` (inf when unknown or free)."""
        fitted = self.fit()
        if fitted is None:
            return math.inf
        a, b = fitted
        if b <= 0.0:
            return math.inf if a <= budget_s else 0.0
        return (budget_s - a) / b
