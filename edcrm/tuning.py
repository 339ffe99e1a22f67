"""Interpreter settings for CPU-bound batch work (a lead import), applied while it runs.

Two settings are process-wide, so they are reference-counted: the first `tuned()` to enter applies
them, however many imports then run concurrently, and the last to leave restores what it found.

- The cyclic garbage collector. An import allocates several objects per row (cells, values, outcomes),
  freed by reference counting batch by batch; with the default threshold they trigger a young
  collection every 700 of them and, every hundred of those, a full one over every object of the
  process (the app's modules, SQLAlchemy's caches...): measured in process, about a fifth of the
  import's CPU time. So the objects that exist at entry are frozen (left out of collections,
  gc.freeze) and young collections come every GC_THRESHOLD allocations; cyclic garbage is still
  collected, only later. Objects frozen by someone else stay frozen: only a freeze of ours is undone.
- The switch interval (default 5 ms): how long a thread may hold the GIL while another waits for it.
  The job's thread spends most of an import waiting on PostgreSQL, and each time an answer arrives it
  needs the GIL back from the reading thread, busy parsing and validating: with the default interval
  each of the ~10 round trips of a batch can wait up to 5 ms for it.

And one per import: the CpuGate, through which the job's thread pauses its reading thread.

None of it applies inside the web process (the embedded mode runs the job workers there, see
`allowed`): a frozen heap and a short switch interval would tune the server's request threads for an
import's sake. There `tuned()` changes nothing and hands out a gate that never closes.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

#: The app config flag that the embedded mode sets: the job workers run inside the web process.
EMBEDDED_WORKERS = "EMBEDDED_WORKERS"
#: While tuned: how long (seconds) a thread may hold the GIL while another waits for it.
SWITCH_INTERVAL = 0.0005
#: While tuned: allocations (net) between two collections of the youngest generation (default 700).
GC_THRESHOLD = 20_000


def allowed(config: Mapping[str, Any]) -> bool:
    """Whether work of the app with this config may tune the interpreter: not in the web process."""
    return not config.get(EMBEDDED_WORKERS, False)


class CpuGate:
    """Lets the job's thread pause the reading thread while it runs Python between two waits on
    PostgreSQL.

    That stretch (locks, the duplicate check and rotation of each row, the rendering of the batch) keeps
    PostgreSQL idle until the batch's COPY is sent: sharing the GIL with the reading thread there makes
    it several times longer. The reading thread checks the gate before each row and waits while it is
    closed; it gets the CPU back while the job's thread waits for the COPY and the commit. An inert
    gate (untuned) never closes.
    """

    def __init__(self, *, inert: bool = False):
        self.inert = inert
        self.open = threading.Event()
        self.open.set()

    @contextmanager
    def closed(self) -> Iterator[None]:
        if self.inert:
            yield
            return
        self.open.clear()
        try:
            yield
        finally:
            self.open.set()

    def wait(self, stopping: threading.Event) -> None:
        while not self.open.wait(0.1) and not stopping.is_set():
            pass


class _ProcessSettings:
    """The process-wide settings, applied by the first user and restored by the last."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.switch_interval = sys.getswitchinterval()
        self.threshold = gc.get_threshold()
        self.froze = False

    def enter(self) -> None:
        with self.lock:
            if self.users == 0:
                self.switch_interval = sys.getswitchinterval()
                sys.setswitchinterval(min(self.switch_interval, SWITCH_INTERVAL))
                self.threshold = gc.get_threshold()
                self.froze = gc.get_freeze_count() == 0
                if self.froze:
                    gc.freeze()
                gc.set_threshold(max(self.threshold[0], GC_THRESHOLD), *self.threshold[1:])
            self.users += 1

    def leave(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                gc.set_threshold(*self.threshold)
                if self.froze:
                    gc.unfreeze()
                sys.setswitchinterval(self.switch_interval)


_settings = _ProcessSettings()


@contextmanager
def tuned(*, enabled: bool = True) -> Iterator[CpuGate]:
    """The interpreter tuned for one import while the block runs (see the module's docstring), and the
    import's CpuGate; with enabled false, nothing changes and the gate is inert."""
    if not enabled:
        yield CpuGate(inert=True)
        return
    _settings.enter()
    try:
        yield CpuGate()
    finally:
        _settings.leave()
