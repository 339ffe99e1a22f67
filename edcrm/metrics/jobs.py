"""Job metrics of the embedded mode's in-process workers: the `dramatiq_*` series, under the names,
labels and buckets of Dramatiq's Prometheus middleware (dramatiq.middleware.prometheus), which the
`dramatiq edcrm.actors` workers expose themselves (edcrm.jobs.prometheus)."""

from __future__ import annotations

import dramatiq
from dramatiq.common import current_millis
from dramatiq.middleware import Middleware
from prometheus_client import Counter, Gauge, Histogram

_JOB_LABELS = ["queue_name", "actor_name"]
DRAMATIQ_DURATION_BUCKETS: tuple[float, ...] = (
    5,
    10,
    25,
    50,
    75,
    100,
    250,
    500,
    750,
    1000,
    2500,
    5000,
    7500,
    10000,
    30000,
)
DRAMATIQ_DURATION_BUCKETS += (60000, 600000, 900000, float("inf"))
MESSAGES = Counter("dramatiq_messages", "The total number of messages processed.", _JOB_LABELS, registry=None)
MESSAGE_ERRORS = Counter(
    "dramatiq_message_errors", "The total number of errored messages.", _JOB_LABELS, registry=None
)
MESSAGE_RETRIES = Counter(
    "dramatiq_message_retries", "The total number of retried messages.", _JOB_LABELS, registry=None
)
MESSAGE_REJECTS = Counter(
    "dramatiq_message_rejects", "The total number of dead-lettered messages.", _JOB_LABELS, registry=None
)
MESSAGES_IN_PROGRESS = Gauge(
    "dramatiq_messages_inprogress",
    "The number of messages in progress.",
    _JOB_LABELS,
    multiprocess_mode="livesum",
    registry=None,
)
DELAYED_IN_PROGRESS = Gauge(
    "dramatiq_delayed_messages_inprogress",
    "The number of delayed messages in memory.",
    _JOB_LABELS,
    multiprocess_mode="livesum",
    registry=None,
)
MESSAGE_DURATION = Histogram(
    "dramatiq_message_duration_milliseconds",
    "The time spent processing messages.",
    _JOB_LABELS,
    buckets=DRAMATIQ_DURATION_BUCKETS,
    registry=None,
)


class JobMetrics(Middleware):
    """The embedded mode's worker metrics, under the names of Dramatiq's Prometheus middleware (which
    needs the `dramatiq` CLI: it forks an HTTP server and takes over PROMETHEUS_MULTIPROC_DIR, neither of
    which fits inside gunicorn). The web's `/metrics` shows them, so one dashboard fits both modes.

    Last in the broker's middleware: a message that an earlier middleware skips before it starts (the
    ledger skips cancelled and superseded jobs) never reached before_process_message here, and is not
    counted as processed.
    """

    def __init__(self) -> None:
        self._started: dict[str, int] = {}
        self._delayed: set[str] = set()

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int | None) -> None:
        if "retries" in message.options:
            MESSAGE_RETRIES.labels(message.queue_name, message.actor_name).inc()

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        MESSAGE_REJECTS.labels(message.queue_name, message.actor_name).inc()

    def before_delay_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._delayed.add(message.message_id)
        DELAYED_IN_PROGRESS.labels(message.queue_name, message.actor_name).inc()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        labels = (message.queue_name, message.actor_name)
        if message.message_id in self._delayed:
            self._delayed.discard(message.message_id)
            DELAYED_IN_PROGRESS.labels(*labels).dec()
        MESSAGES_IN_PROGRESS.labels(*labels).inc()
        self._started[message.message_id] = current_millis()

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *, result=None, exception=None
    ) -> None:
        started = self._started.pop(message.message_id, None)
        if started is None:
            return  # skipped before it started
        labels = (message.queue_name, message.actor_name)
        MESSAGE_DURATION.labels(*labels).observe(current_millis() - started)
        MESSAGES_IN_PROGRESS.labels(*labels).dec()
        MESSAGES.labels(*labels).inc()
        if exception is not None:
            MESSAGE_ERRORS.labels(*labels).inc()

    after_skip_message = after_process_message
