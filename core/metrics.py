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
# From the API's receipt to the worker's commit: milliseconds when drained, hours when stuck.
_LAG = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

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
COMMITS = Counter("worker_commits_total", "Micro-batches committed to PostgreSQL (then acked)")
COMMIT_LAG = Histogram(
    "worker_commit_lag_seconds",
    "Age of a micro-batch's oldest message at its commit: now - the API's received_at",
    buckets=_LAG,
)
LAST_COMMIT = Gauge(
    "worker_last_commit_timestamp_seconds",
    "Unix time of the last micro-batch committed by a worker process of the host",
    multiprocess_mode="max",
)

# The compactor
COMPACTION_RUNS = Counter("compaction_runs_total", "Compaction runs")
COMPACTION_ROWS = Counter("compaction_rows_total", "Events moved to the lake")
COMPACTION_DAYS = Counter("compaction_days_total", "Days moved to the lake")
COMPACTION_LOCK_RETRIES = Counter(
    "compaction_lock_retries_total",
    "Times the compactor let go of a lock wait on events (a reader held it) to retry later",
)
COMPACTION_FAILURES = Counter(
    "compaction_failures_total",
    "Compaction failures: a day left in PostgreSQL (stage=day), a run that raised (stage=run)",
    ["stage"],
)
COMPACTION_LAST_SUCCESS = Gauge(
    "compaction_last_success_timestamp_seconds",
    "Unix time a compaction run last ended with no failed day (0: none yet in this process)",
    multiprocess_mode="max",
)

# Label values known in advance, created at import with 0: a series exists from the first
# scrape, so rate()/increase() see its first increment and dashboards show 0, not "no data".
# (Refusal codes and body formats are created where they are defined: ingest/.)
KNOWN_LABELS: dict[Counter, tuple[str, ...]] = {
    RATE_LIMITED: ("rate", "too_large"),
    PUBLISH_REFUSED: ("queue_full", "broker_unavailable"),
    RETRIES: ("database_down", "contention", "write_error"),
    DEAD_LETTERS: ("undecodable", "staging_failed", "refused_by_database", "write_failed"),
    COMPACTION_FAILURES: ("day", "run"),
}


def touch(counter: Counter, values: Iterable[str]) -> None:
    """Create ``counter``'s series for each value of its one label (at 0 when new)."""
    for value in values:
        counter.labels(value)


for _counter, _values in KNOWN_LABELS.items():
    touch(_counter, _values)


def observe_batch(source: str, received: int, refusals: dict[str, int]) -> None:
    """Received / refused counts of one validated request (refusals by code)."""
    EVENTS_RECEIVED.labels(source=source).inc(received)
    for code, count in refusals.items():
        EVENTS_REJECTED.labels(reason=code).inc(count)


def observe_commit(oldest_received_at: float, now: float) -> None:
    """One micro-batch committed; ``oldest_received_at``: its oldest message's receipt
    (Unix seconds, the API host's clock)."""
    COMMITS.inc()
    COMMIT_LAG.observe(max(0.0, now - oldest_received_at))
    LAST_COMMIT.set(now)


class QueueDepth(Collector):
    """``queue_messages``: messages waiting in each queue, read when scraped."""

    def __init__(self, depths: dict[str, int]) -> None:
        self._depths = depths

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("queue_messages", "Messages ready in the queue", labels=["queue"])
        for queue, depth in self._depths.items():
            gauge.add_metric([queue], depth)
        yield gauge


class RedisUp(Collector):
    """``redis_up``: whether the answering process reached Redis, checked when scraped."""

    def __init__(self, up: bool) -> None:
        self._up = up

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "redis_up",
            "1 if this API process's PING to Redis answered at scrape time",
            int(self._up),
        )


def render(queue_depths: dict[str, int] | None = None, redis_up: bool | None = None) -> bytes:
    """The exposition text: every process's values (multiprocess mode) or this one's,
    plus what the answering process read at scrape time (queue depths, Redis)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    text = generate_latest(registry)
    extra = CollectorRegistry()
    if queue_depths:
        extra.register(QueueDepth(queue_depths))
    if redis_up is not None:
        extra.register(RedisUp(redis_up))
    return text + generate_latest(extra)
