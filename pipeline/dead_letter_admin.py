"""``events dlq``: inspect, replay and purge the dead-letter queue.

RabbitMQ has no way to read a queue without taking messages, so ``list`` and ``show`` take
them unacknowledged, then return them to the DLQ with ``basic.nack(requeue=true)`` before the
channel closes (closing it would return them too). An explicit nack because RabbitMQ 4.x
counts it as a plain return, not a failed delivery, so it does not add to the message's
``x-delivery-count`` (a closed channel does); on 3.x every return counts, which is why the DLQ
is declared with a limit out of reach (``pipeline/topology.py``). ``replay`` publishes a
message to the main queue (with confirm) and only then acknowledges it in the DLQ: a crash in
between leaves a copy in both, which is harmless because the worker stores each event_id once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from pipeline import broker
from pipeline.message import MessageDecodeError, decode_message
from pipeline.topology import Topology

# Dropped on replay: the message starts afresh (the broker sets x-delivery-count again).
_DEAD_LETTER_HEADERS = (
    "x-dead-letter-reason",
    "x-error",
    "x-failed-at",
    "x-write-attempts",
    "x-attempts",
    "x-delivery-count",
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of the DLQ, as shown by ``list``/``show``."""

    id: str
    reason: str
    error: str
    failed_at: str
    attempts: int
    write_attempts: int
    events: int | None
    key_id: str
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "error": self.error,
            "failed_at": self.failed_at,
            "attempts": self.attempts,
            "write_attempts": self.write_attempts,
            "events": self.events,
            "key_id": self.key_id,
            "bytes": self.bytes,
        }


def describe(message: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers or {})

    def text(name: str) -> str:
        value = headers.get(name, "")
        return value.decode() if isinstance(value, bytes) else str(value)

    def number(name: str) -> int:
        value = headers.get(name)
        return value if isinstance(value, int) else 0

    events = headers.get("x-events")
    return DeadLetter(
        id=message.message_id or "",
        reason=text("x-dead-letter-reason") or text("x-first-death-reason") or "unknown",
        error=text("x-error"),
        failed_at=text("x-failed-at"),
        attempts=number("x-attempts"),
        write_attempts=number("x-write-attempts"),
        events=events if isinstance(events, int) else None,
        key_id=text("x-key-id"),
        bytes=len(message.body),
    )


def events_of(message: AbstractIncomingMessage, limit: int | None = None) -> list[dict[str, Any]]:
    """The events of a dead letter (``show --events``); [] if the body is not a batch."""
    try:
        table = decode_message(message.body).table
    except MessageDecodeError:
        return []
    if limit is not None:
        table = table.slice(0, limit)
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        event_id = row.get("event_id")
        if isinstance(event_id, bytes) and len(event_id) == 16:
            row["event_id"] = str(uuid.UUID(bytes=event_id))
        if isinstance(row.get("occurred_at"), datetime):
            row["occurred_at"] = row["occurred_at"].isoformat()
    return rows


class DeadLetterQueue:
    """Operations on ``<prefix>_queue_dlq`` over one connection."""

    def __init__(self, url: str, topology: Topology) -> None:
        self._url = url
        self._topology = topology

    @contextlib.asynccontextmanager
    async def _channel(
        self,
    ) -> AsyncIterator[tuple[AbstractChannel, AbstractQueue, list[AbstractIncomingMessage]]]:
        """The DLQ on a fresh channel, and a list for the messages taken from it: those not
        acknowledged when the block ends are returned to the DLQ (see the module doc)."""
        connection = await broker.connect(self._url, timeout=5)
        taken: list[AbstractIncomingMessage] = []
        try:
            await self._topology.declare(connection)
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            queue = await channel.declare_queue(self._topology.dead_letter_queue, passive=True)
            try:
                yield channel, queue, taken
            finally:
                # In the order taken, so the DLQ keeps its order. Only once everything was
                # read: a message returned earlier would be the next one read again.
                with contextlib.suppress(*aio_pika.exceptions.CONNECTION_EXCEPTIONS):
                    for message in taken:
                        if not message.processed:
                            await message.nack(requeue=True)
        finally:
            await connection.close()

    async def _take_all(
        self, queue: AbstractQueue, taken: list[AbstractIncomingMessage], limit: int | None = None
    ) -> list[AbstractIncomingMessage]:
        """Messages taken unacknowledged, added to ``taken`` (returned when the block ends)."""
        while limit is None or len(taken) < limit:
            message = await queue.get(no_ack=False, fail=False, timeout=5)
            if message is None:
                break
            taken.append(message)
        return taken

    async def count(self) -> int:
        async with self._channel() as (_, queue, _taken):
            return int(queue.declaration_result.message_count or 0)

    async def entries(self, limit: int = 100) -> tuple[int, list[DeadLetter]]:
        """The number of dead letters and the first ``limit`` of them."""
        async with self._channel() as (_, queue, taken):
            total = int(queue.declaration_result.message_count or 0)
            return total, [describe(m) for m in await self._take_all(queue, taken, limit)]

    async def show(self, message_id: str, events: int | None = 20) -> dict[str, Any] | None:
        async with self._channel() as (_, queue, taken):
            # Taken one by one until the match (each stays unacked until the block ends, then
            # returns to the DLQ): never the whole queue in memory.
            while (message := await queue.get(no_ack=False, fail=False, timeout=5)) is not None:
                taken.append(message)
                if message.message_id == message_id:
                    out = describe(message).as_dict()
                    out["headers"] = {
                        k: v.decode() if isinstance(v, bytes) else v
                        for k, v in (message.headers or {}).items()
                        if isinstance(v, str | int | float | bool | bytes)
                    }
                    out["sample" if events else "events"] = events_of(message, events)
                    return out
        return None

    async def replay(self, ids: Iterable[str] | None = None) -> list[str]:
        """Move the chosen dead letters (all when ``ids`` is None) back to the main queue.

        With ``ids=None`` only the messages present at the start are replayed, so a message
        that fails again is not replayed in a loop.
        """
        wanted = None if ids is None else set(ids)
        replayed: list[str] = []
        async with self._channel() as (channel, queue, taken):
            budget = int(queue.declaration_result.message_count or 0)
            while budget > 0 and (wanted is None or wanted - set(replayed)):
                message = await queue.get(no_ack=False, fail=False, timeout=5)
                if message is None:
                    break
                taken.append(message)
                budget -= 1
                if wanted is not None and message.message_id not in wanted:
                    continue  # stays unacked: back to the DLQ when the block ends
                await self._republish(channel, message)
                await message.ack()
                replayed.append(message.message_id or "")
        return replayed

    async def _republish(self, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        headers = {
            k: v for k, v in (message.headers or {}).items() if k not in _DEAD_LETTER_HEADERS
        }
        headers["x-replayed-at"] = datetime.now(UTC).isoformat()
        await channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                content_type=message.content_type,
                type=message.type,
                message_id=message.message_id,
                timestamp=message.timestamp,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self._topology.queue,
            mandatory=True,
            timeout=10,
        )

    async def purge(self) -> int:
        async with self._channel() as (_, queue, _taken):
            result = await queue.purge()
            return int(result.message_count or 0)
