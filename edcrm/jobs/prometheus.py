"""Dramatiq's Prometheus middleware, for the `dramatiq edcrm.actors` workers (the Redis broker).

Under the `dramatiq` CLI, each worker process writes its metrics (`dramatiq_messages_total`, ...) to files
in `dramatiq_prom_db` (prometheus_client's multiprocess mode), and a process that the CLI forks serves
their sum on `dramatiq_prom_host:dramatiq_prom_port` (default 0.0.0.0:9191). The Procfile gives each
worker group a port and a directory of its own (see the README, "Metrics").

What this subclass adds to Dramatiq's middleware:
- it does nothing until process boot, which only the `dramatiq` CLI's worker processes emit on a Redis
  broker: the web, the CLI and the scheduler build the same broker to send messages, and must neither
  take over PROMETHEUS_MULTIPROC_DIR nor touch metrics that were never created;
- at boot it makes prometheus_client write to the files even if it was imported before (prometheus_client
  picks its mode once, at import, and edcrm's web metrics import it early), and removes the files of
  worker processes that are gone (a previous run's), so that the directory does not fill up run after run
  and a restarted group starts from its own figures;
- a message that an earlier middleware skips before it starts (the ledger, first in the list, skips
  cancelled and superseded jobs) is not counted, nor taken off the in-progress gauge it never joined.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import dramatiq
from dramatiq.middleware.prometheus import DB_PATH, Prometheus

from ..spool import process_alive

log = logging.getLogger(__name__)


def remove_stale_files(path: str | os.PathLike) -> int:
    """Remove prometheus_client's files (`KIND_PID.db`) of processes that no longer run, and of this
    process (a dead one's, whose pid was reused: this process has written nothing there yet); how many."""
    removed = 0
    for file in Path(path).glob("*.db"):
        pid = file.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not process_alive(int(pid))):
            file.unlink(missing_ok=True)
            removed += 1
    return removed


class WorkerPrometheus(Prometheus):
    def __init__(self) -> None:
        super().__init__()
        self.booted = False

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # The web's metrics, if this process has them at all, stay in memory: they are not a worker's.
        from .. import metrics  # noqa: F401

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = DB_PATH
        # After edcrm.metrics, whose import picks prometheus_client's mode (in memory) for the web's.
        from prometheus_client import values

        # A value class of its own, with its own open files, writing into DB_PATH from now on.
        values.ValueClass = values.MultiProcessValue()
        removed = remove_stale_files(DB_PATH)
        if removed:
            log.debug("removed %d metrics files of stopped workers from %s", removed, DB_PATH)
        super().after_process_boot(broker)
        self.booted = True

    def after_worker_shutdown(self, broker, worker) -> None:
        if self.booted:
            super().after_worker_shutdown(broker, worker)

    def after_nack(self, broker, message) -> None:
        if self.booted:
            super().after_nack(broker, message)

    def after_enqueue(self, broker, message, delay) -> None:
        if self.booted:
            super().after_enqueue(broker, message, delay)

    def before_delay_message(self, broker, message) -> None:
        if self.booted:
            super().before_delay_message(broker, message)

    def before_process_message(self, broker, message) -> None:
        if self.booted:
            super().before_process_message(broker, message)

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        if self.booted and message.message_id in self.message_start_times:
            super().after_process_message(broker, message, result=result, exception=exception)

    after_skip_message = after_process_message
