"""The C heap of a node process (glibc malloc): fewer arenas, and freed memory given back.

Role: two calls `fabric.node` makes. `limit_arenas()`, before the node starts any thread, caps
glibc's malloc arenas at ARENAS: by default each thread that allocates may get an arena of its
own (up to 8 per core), and what it freed stays in that arena, unusable by the others — a node's
threads (ZeroMQ's I/O thread, the metrics server, a storage node's writers and readers) allocate
little, so one shared arena is enough (small blocks come from each thread's tcache without the
arena's lock). MALLOC_ARENA_MAX in the environment, when set, wins. `trim()`, once the node
serves, returns the free pages start-up left in the heap to the system (malloc_trim(0)).
Elsewhere than on glibc (musl, macOS) both do nothing. No sockets.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

ARENAS = 1
"""The most malloc arenas of a node process."""
M_ARENA_MAX = -8
"""mallopt(3)'s parameter number for the arena cap (glibc's malloc.h)."""


def _glibc() -> Any | None:
    """The process's own C library when it has glibc's mallopt and malloc_trim."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas() -> None:
    """Cap the malloc arenas at ARENAS unless MALLOC_ARENA_MAX says otherwise; call before the
    first thread starts."""
    libc = _glibc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(M_ARENA_MAX, ARENAS)


def trim() -> None:
    """Give the heap's free pages back to the system."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
