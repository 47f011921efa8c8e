"""The dead-letter queue: messages that cannot be stored, kept with the reason.

A dead letter is the original body and properties, published (with confirm) to
``<prefix>_queue_dlq`` with headers saying why; only then is the original acknowledged.
If the DLQ cannot take it, the original is returned to its queue instead (never dropped).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from core import metrics
from core.ids import uuid7
from pipeline.publisher import BrokerUnavailable, Publisher
from pipeline.steps import Delivery, InFlight

log = logging.getLogger(__name__)


class DeadLetters:
    """Moves deliveries to the dead-letter queue."""

    def __init__(
        self, publisher: Publisher, *, queue: str, source_queue: str, in_flight: InFlight
    ) -> None:
        self._publisher = publisher
        self._in_flight = in_flight
        self._queue = queue
        self._source_queue = source_queue
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, deliveries: Sequence[Delivery], *, reason: str, error: str) -> None:
        """Dead-letter in the background (the caller goes on with other messages)."""
        task = asyncio.create_task(self.send_now(deliveries, reason=reason, error=error))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send_now(
        self, deliveries: Sequence[Delivery], *, reason: str, error: str, attempts: int = 1
    ) -> None:
        """Publish each delivery to the DLQ (with confirm), then ack it.

        Headers: ``x-dead-letter-reason``, ``x-error``, ``x-failed-at``,
        ``x-original-queue``, ``x-write-attempts`` (failed writes of this delivery) and
        ``x-attempts`` (deliveries by the broker, this one included).
        """
        for delivery in deliveries:
            headers = dict(delivery.headers or {})
            headers.update(
                {
                    "x-dead-letter-reason": reason,
                    "x-error": error[:1000],
                    "x-failed-at": datetime.now(UTC).isoformat(),
                    "x-original-queue": self._source_queue,
                    "x-attempts": _delivery_count(headers) + 1,
                    "x-write-attempts": attempts,
                }
            )
            try:
                await self._publisher.publish(
                    delivery.body,
                    message_id=delivery.message_id or str(uuid7()),
                    timestamp=delivery.timestamp or datetime.now(UTC),
                    headers=headers,
                    routing_key=self._queue,
                    content_type=delivery.content_type,
                    message_type=delivery.type,
                )
            except BrokerUnavailable:
                log.exception("could not dead-letter a message; returning it to its queue")
                await self._in_flight.nack(delivery)
                continue
            await self._in_flight.ack(delivery)
            metrics.DEAD_LETTERS.labels(reason=reason).inc()

    async def join(self, timeout: float | None = None) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)


def _delivery_count(headers: dict[str, Any]) -> int:
    """How often the broker delivered the message before (quorum queues count it)."""
    value = headers.get("x-delivery-count", 0)
    return value if isinstance(value, int) else 0
