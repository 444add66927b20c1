"""Logs every garbage collection of every Python process started with this folder on PYTHONPATH.

    PYTHONPATH=bench/gc_pauses GC_PAUSES_DIR=/tmp/gc npc-voice serve --port 50420 &
    PYTHONPATH=bench/gc_pauses GC_PAUSES_DIR=/tmp/gc npc-voice loadtest --server 127.0.0.1:50420 --streams 64 ...
    python bench/gc_pauses/summary.py /tmp/gc

The daemon, its spawned engine process and the load generator each write
``GC_PAUSES_DIR/gc_<pid>.txt`` (wall time, generation, seconds, objects collected) every 5 s.
Measuring only: it adds a callback to every collection.
"""
from __future__ import annotations

import gc
import os
import threading
import time

_DIR = os.environ.get("GC_PAUSES_DIR", "/tmp/gc_pauses")
_started: list[float] = []
_rows: list[tuple[float, int, float, int]] = []


def _on_collect(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        _rows.append((time.time(), info["generation"], time.perf_counter() - _started.pop(), info.get("collected", 0)))


def _write_every_5s() -> None:
    os.makedirs(_DIR, exist_ok=True)
    path = os.path.join(_DIR, f"gc_{os.getpid()}.txt")
    while True:
        time.sleep(5.0)
        with open(path, "w") as f:
            f.writelines(f"{t:.3f} {g} {s:.6f} {n}\n" for t, g, s, n in list(_rows))


gc.callbacks.append(_on_collect)
threading.Thread(target=_write_every_5s, name="gc-pauses-log", daemon=True).start()
