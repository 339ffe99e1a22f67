"""The embedded mode: without REDIS_URL, the web process runs the workers and the periodic scheduler.

One Dramatiq worker per queue, with the queue's concurrency, on the in-memory broker; at start, the jobs
that a previous run left enqueued, running or retrying are sent again, so a restart loses no job.
Meant for one web process (`make run`): production runs `dramatiq edcrm.actors` against Redis.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
import pendulum
from flask import Flask

from .. import tuning
from ..config import QUEUES
from . import ledger
from .broker import broker_of, is_in_memory

log = logging.getLogger(__name__)


class EmbeddedWorkers:
    def __init__(self, app: Flask, broker: dramatiq.Broker | None = None):
        self.app = app
        self.broker = broker or broker_of(app)
        self.workers: list[dramatiq.Worker] = []
        self._stop = threading.Event()
        self._scheduler: threading.Thread | None = None

    def start(self) -> EmbeddedWorkers:
        if not is_in_memory(self.broker):
            raise RuntimeError("embedded workers need the in-memory broker (REDIS_URL is set: run dramatiq)")
        self.app.config[tuning.EMBEDDED_WORKERS] = True  # jobs run in the web process: edcrm.tuning is off
        self.broker.emit_after("process_boot")
        # One worker per queue on one broker, on purpose (each with its queue's concurrency): the broker
        # warns as the second and third add their own worker middleware. Not a mistake: not said.
        quiet = _NotTwice()
        self.broker.logger.addFilter(quiet)
        try:
            for queue, threads in QUEUES.items():
                worker = dramatiq.Worker(
                    self.broker, queues={queue}, worker_threads=threads, worker_timeout=250
                )
                worker.start()
                self.workers.append(worker)
        finally:
            self.broker.logger.removeFilter(quiet)
        with self.app.app_context():
            ledger.resend_pending(self.broker)
        self._scheduler = threading.Thread(target=self._schedule, name="edcrm-scheduler", daemon=True)
        self._scheduler.start()
        log.info("embedded workers started: %s", ", ".join(f"{q} x{n}" for q, n in QUEUES.items()))
        return self

    def stop(self, timeout: int = 10_000) -> None:
        self._stop.set()
        for worker in self.workers:
            stop_worker(self.broker, worker, timeout=timeout)
        self.workers.clear()
        if self._scheduler is not None:
            self._scheduler.join(timeout / 1000)

    def _schedule(self) -> None:
        """periodiq's schedule, in a thread: send each periodic actor at the minutes its cron names."""
        actors = [a for a in self.broker.actors.values() if "periodic" in a.options]
        if not actors:
            return
        while not self._stop.is_set():
            now = pendulum.now().replace(microsecond=0)
            due = min(actor.options["periodic"].next_valid_date(now) for actor in actors)
            if self._stop.wait(max(0.0, (due - pendulum.now()).total_seconds())):
                return
            for actor in actors:
                if actor.options["periodic"].validate(due):
                    actor.send_with_options(scheduled_at=str(due))


class _NotTwice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "same type twice" not in record.getMessage()


def stop_worker(broker: dramatiq.Broker, worker: dramatiq.Worker, timeout: int = 10_000) -> None:
    """Stop worker and detach it from broker: Worker.stop() leaves its middleware behind, which would
    start consumers for a dead worker whenever a queue is declared later."""
    worker.stop(timeout=timeout)
    broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not worker]


def start(app: Flask) -> EmbeddedWorkers:
    """Start the embedded workers for app (called by gunicorn.conf.py in a process that serves)."""
    return EmbeddedWorkers(app).start()
