"""Process-wide memory settings, applied when the edcrm package is first imported (web and worker
processes, the CLI), before the process starts its threads.

glibc's malloc gives every thread that allocates concurrently an arena of its own, up to 8 per core,
and an arena keeps the memory it once held: a threaded process (gunicorn's gthread workers, a dramatiq
worker's threads, the S3 part uploaders and chunk fetchers) grows by a few MB per arena. Two arenas cut
that with no measurable cost in throughput here (Python holds the GIL for most allocations anyway).

And glibc serves a block of more than 128 KiB from its own mapping, returned to the system when freed,
but raises that threshold to the size of the largest such block once freed (up to 32 MiB): after the
first 1 MiB buffer (a chunk, a block of a recording, a part being hashed) every later one comes from the
heap, where freed blocks stay resident and fragment. A fixed threshold of 256 KiB keeps the buffers of
uploads and recordings out of the heap (a few µs of page faults per MiB; the network costs milliseconds).

`MALLOC_ARENA_MAX` / `MALLOC_MMAP_THRESHOLD_` in the environment, read by glibc at start, take precedence;
otherwise mallopt() sets them, so every way of starting the processes gets them (Procfile, `make run`,
systemd, a container), not only those that remember the variables. Measured with bench/recordings.py.
"""

from __future__ import annotations

import ctypes
import os

#: glibc's mallopt() parameter numbers (malloc.h), the environment variables that set them at start, and
#: the values edcrm uses.
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8
SETTINGS = (
    (M_ARENA_MAX, "MALLOC_ARENA_MAX", 2),
    (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 256 * 1024),
)


def tune_malloc() -> list[str]:
    """Apply SETTINGS with glibc's mallopt(), each unless its variable is set; the names of those
    applied. Nothing off glibc (macOS, musl)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return []
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return [
        name for param, name, value in SETTINGS if not os.environ.get(name) and mallopt(param, value) == 1
    ]
