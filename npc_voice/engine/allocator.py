"""Keep glibc's malloc from handing the engine's working memory back to the kernel after every step.

A CPU engine step allocates and frees a few tensors of several MiB (the vocoder's FFT buffers:
[2, rows, 1024] and their spectra). With glibc's defaults the freed top of the heap is trimmed
(returned to the kernel) and the next step faults every page back in, zeroed: measured in the
engine process at 48 continuous streams, ~24,000 minor page faults per second and a third of the
vocoder's time in the kernel (bench/README.md, "Allocator"). ``M_TOP_PAD`` keeps 64 MiB of slack at
the heap top, so the same pages serve the next step; glibc's own adaptive mmap threshold stays on.

Only glibc has ``mallopt``; elsewhere (musl, macOS) this does nothing. A ``MALLOC_*`` variable set
by the operator wins: glibc read it at start, and we then leave the allocator alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_TOP_PAD = -2  # glibc <malloc.h>
TOP_PAD_BYTES = 64 << 20

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set ``M_TOP_PAD`` once per process (idempotent). Returns whether it is set by us."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if any(name.startswith("MALLOC_") for name in os.environ):
        log.info("allocator: MALLOC_* set in the environment; leaving glibc malloc as configured")
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_TOP_PAD, TOP_PAD_BYTES))
    return _done
