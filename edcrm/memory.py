"""Process-wide memory settings, applied when the edcrm package is first imported (web and worker
processes, the CLI), before the process starts its threads.

glibc's malloc gives every thread that allocates concurrently an arena of its own, up to 8 per core,
and an arena keeps the memory it once held: a threaded process (gunicorn's gthread workers, a dramatiq
worker's threads, the S3 part uploaders and chunk fetchers) grows by a few MB per arena. Two arenas cut
that with no measurable cost in throughput here (Python holds the GIL for most allocations anyway).
`MALLOC_ARENA_MAX` in the environment, read by glibc at start, takes precedence; this sets the same
limit with mallopt() when it is absent, so every way of starting the processes gets it (Procfile,
`make run`, systemd, a container), not only those that remember the variable.
"""

from __future__ import annotations

import ctypes
import os

#: glibc's mallopt() parameter numbers (malloc.h).
M_ARENA_MAX = -8

DEFAULT_ARENA_MAX = 2


def limit_malloc_arenas(arenas: int = DEFAULT_ARENA_MAX) -> bool:
    """Limit glibc's malloc arenas unless MALLOC_ARENA_MAX is set; True if mallopt() took it. A no-op
    (False) off glibc."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without it)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_ARENA_MAX, arenas) == 1
