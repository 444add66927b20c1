"""Keep Python's cyclic garbage collector from pausing the daemon and the engine for 100+ ms.

A full (generation 2) collection walks every container object the process holds, and the
daemon and the engine process each hold hundreds of thousands from start-up alone: torch,
numba, gRPC, the voices' modules. Under load, per-line objects (requests, prepared lines,
events, messages) live long enough to be promoted, so a full collection comes every few
seconds, and while it runs it holds the GIL: the engine thread stops between ops and the
event loop stops sending. Measured at 64 continuous streams on the 2-core VM (gc.callbacks, 36 s):
daemon 6 full collections of up to 137 ms (570 ms in all), engine process 5 of up to 147 ms
(397 ms) — each a stall of every stream at once, as long as the client's jitter buffer holds
(bench/README.md, "Collector pauses").

``freeze_after_startup`` collects once and moves every object alive then into the permanent
generation (``gc.freeze``): later collections no longer walk them, so a full collection costs
what was made since. Garbage made after start-up is collected as before, and a frozen object is
still freed when its last reference goes; only a reference cycle among frozen objects would stay
until exit. The daemon and the engine process call it once they serve, and again after a reload
has added voices.
"""
from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


def freeze_after_startup(where: str) -> int:
    """Collect, then freeze everything alive now out of later collections. Returns how many
    objects the permanent generation holds."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("%s: %d start-up objects frozen out of garbage collection (%.0f ms)", where, frozen,
             (time.perf_counter() - t0) * 1000.0)
    return frozen


@contextmanager
def frozen_while(where: str) -> Iterator[None]:
    """``freeze_after_startup`` for a stretch of a process that goes on after it (the load
    generator inside another program, e.g. a test): after it, every frozen object goes back to
    the collector (``gc.unfreeze``; also any frozen before)."""
    freeze_after_startup(where)
    try:
        yield
    finally:
        gc.unfreeze()
