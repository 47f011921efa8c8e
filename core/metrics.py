"""Prometheus metrics of every process kind (API, worker, compactor).

With several processes on a host (gunicorn workers, ``events up``), set
``PROMETHEUS_MULTIPROC_DIR`` (``events serve`` / ``up`` do it): each process writes its
values there and ``GET /metrics`` on any API process reports the sum over all of them. The
variable must be set before this module is imported, as prometheus_client requires.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The API
EVENTS_RECEIVED = Counter("events_received_total", "Events in requests, by body format", ["source"])
EVENTS_ACCEPTED = Counter("events_accepted_total", "Events accepted (published, 202/200)")
EVENTS_REJECTED = Counter("events_rejected_total", "Events refused, by reason", ["reason"])
REQUESTS = Histogram(
    "http_request_duration_seconds",
    "Request latency",
    ["route", "method", "status"],
    buckets=_LATENCY,
)
PUBLISH_SECONDS = Histogram(
    "publish_duration_seconds", "From publish to the broker's confirm", buckets=_LATENCY
)
PUBLISH_REFUSED = Counter("publish_refused_total", "Batches the broker did not take", ["reason"])
RATE_LIMITED = Counter("rate_limit_refusals_total", "Requests refused by a rate limit", ["reason"])
REDIS_ERRORS = Counter(
    "redis_errors_total", "Rate-limit / idempotency checks skipped or refused: Redis unreachable"
)
IDEMPOTENT_REPLAYS = Counter("idempotent_replays_total", "Answers replayed for an Idempotency-Key")
DECODED_OFF_LOOP = Counter(
    "decode_offloaded_total", "Request bodies decoded in a decoding process (large bodies)"
)
DECODE_REFUSED = Counter(
    "decode_budget_refusals_total", "Requests refused with 503 overloaded: decode budget full"
)
BROKER_CHANNELS_OPENED = Counter(
    "broker_channels_opened_total",
    "AMQP channels opened by publishers (publishing, dead-lettering, reading queue depths)",
)

# The worker
EVENTS_INSERTED = Counter("events_inserted_total", "Events stored in PostgreSQL")
EVENTS_DUPLICATES = Counter("events_duplicates_total", "Events skipped as already stored")
BATCH_EVENTS = Histogram(
    "worker_batch_events",
    "Events per micro-batch",
    buckets=(100, 1000, 5000, 10000, 20000, 50000, 100000),
)
WRITE_SECONDS = Histogram(
    "worker_write_seconds", "Claim + COPY + commit of one micro-batch", buckets=_LATENCY
)
RETRIES = Counter("worker_retries_total", "Micro-batch writes retried", ["reason"])
DEAD_LETTERS = Counter("dead_letters_total", "Messages sent to the dead-letter queue", ["reason"])
WORKER_INFLIGHT_BYTES = Gauge(
    "events_worker_inflight_bytes",
    "Bytes of message bodies held by the worker processes (received, not yet acked)",
    multiprocess_mode="livesum",
)
WORKER_INTAKE_PAUSES = Counter(
    "worker_intake_pauses_total",
    "Consumers cancelled because bodies grew past what the bytes cap left room for",
)

# The compactor
COMPACTION_RUNS = Counter("compaction_runs_total", "Compaction runs")
COMPACTION_ROWS = Counter("compaction_rows_total", "Events moved to the lake")
COMPACTION_DAYS = Counter("compaction_days_total", "Days moved to the lake")
COMPACTION_LOCK_RETRIES = Counter(
    "compaction_lock_retries_total",
    "Times the compactor let go of a lock wait on events (a reader held it) to retry later",
)


def observe_batch(source: str, received: int, refusals: dict[str, int]) -> None:
    """Received / refused counts of one validated request (refusals by code)."""
    EVENTS_RECEIVED.labels(source=source).inc(received)
    for code, count in refusals.items():
        EVENTS_REJECTED.labels(reason=code).inc(count)


class QueueDepth(Collector):
    """``queue_messages``: messages waiting in each queue, read when scraped."""

    def __init__(self, depths: dict[str, int]) -> None:
        self._depths = depths

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("queue_messages", "Messages ready in the queue", labels=["queue"])
        for queue, depth in self._depths.items():
            gauge.add_metric([queue], depth)
        yield gauge


def render(queue_depths: dict[str, int] | None = None) -> bytes:
    """The exposition text: every process's values (multiprocess mode) or this one's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    text = generate_latest(registry)
    if queue_depths:
        extra = CollectorRegistry()
        extra.register(QueueDepth(queue_depths))
        text += generate_latest(extra)
    return text
