"""The queue topology, declared identically by the API and the workers.

- ``<prefix>_queue``: durable, quorum by default. Its dead-letter target is the DLQ, with
  at-least-once dead-lettering (quorum) so a message that reaches the delivery limit is
  moved, never dropped. ``x-overflow: reject-publish`` makes a full queue refuse new
  publishes (the API answers 503) instead of silently dropping old messages.
- ``<prefix>_queue_dlq``: durable queue for messages that cannot be stored (undecodable,
  or poison data). The worker publishes there itself, with headers saying why. As a quorum
  queue it gets an explicit ``x-delivery-limit`` of ``DEAD_LETTER_DELIVERY_LIMIT``: it has no
  dead-letter target of its own, so a message past its limit would be dropped.

Both are reached through the default exchange (routing key = queue name); publishes are
``mandatory`` so a missing queue is an error, never a silent drop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from core.config import Settings

log = logging.getLogger(__name__)

# RabbitMQ 4.x gives a quorum queue declared without ``x-delivery-limit`` a limit of 20 (3.x:
# none), and a message returned more often than that is dropped when the queue has no
# dead-letter target, as the DLQ has not. Reading the DLQ (``events dlq list/show``) returns
# what it read. On 3.10 every return counts, however it is made (measured: channel close,
# ``basic.nack`` and ``basic.reject`` with requeue each add one to ``x-delivery-count``), so
# the limit must be far out of reach. ``-1``, "no limit" on 4.x, drops a message at its first
# return on 3.10 (measured); the largest signed 32-bit value is accepted by both.
DEAD_LETTER_DELIVERY_LIMIT = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Topology:
    """Queue names and arguments."""

    queue: str
    dead_letter_queue: str
    queue_type: str = "quorum"
    delivery_limit: int = 100
    max_messages: int = 0  # 0: no limit
    max_bytes: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(
            queue=settings.queue_name,
            dead_letter_queue=settings.dead_letter_queue_name,
            queue_type=settings.queue_type,
            delivery_limit=settings.delivery_limit,
            max_messages=settings.queue_max_messages,
            max_bytes=settings.queue_max_bytes,
        )

    def queue_arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "x-queue-type": self.queue_type,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_letter_queue,
        }
        if self.queue_type == "quorum":
            args["x-delivery-limit"] = self.delivery_limit
            args["x-dead-letter-strategy"] = "at-least-once"
        # Backpressure: beyond these the broker nacks new publishes and the API answers 503.
        args["x-overflow"] = "reject-publish"
        if self.max_messages > 0:
            args["x-max-length"] = self.max_messages
        if self.max_bytes > 0:
            args["x-max-length-bytes"] = self.max_bytes
        return args

    def dead_letter_arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": self.queue_type}
        if self.queue_type == "quorum":
            # A classic queue refuses the argument (PRECONDITION_FAILED, on 3.10 too).
            args["x-delivery-limit"] = DEAD_LETTER_DELIVERY_LIMIT
        return args

    async def declare(self, connection: AbstractConnection) -> None:
        """Declare both queues; an existing queue with other arguments is kept as it is."""
        await self._declare(connection, self.dead_letter_queue, self.dead_letter_arguments())
        await self._declare(connection, self.queue, self.queue_arguments())

    @staticmethod
    async def _declare(connection: AbstractConnection, name: str, args: dict[str, Any]) -> None:
        channel: AbstractChannel = await connection.channel()
        try:
            await channel.declare_queue(name, durable=True, arguments=args)
        except aiormq.exceptions.ChannelPreconditionFailed:
            # The queue exists with other arguments (declared by an older version or changed
            # by an operator's policy): use it as it is rather than refuse to start.
            log.warning(
                "queue exists with different arguments; using it as is", extra={"queue": name}
            )
            channel = await connection.channel()
            await channel.declare_queue(name, passive=True)
        finally:
            if not channel.is_closed:
                await channel.close()


async def delete_queues(connection: aio_pika.abc.AbstractConnection, topology: Topology) -> None:
    """Remove both queues (tests and `events` maintenance only)."""
    channel = await connection.channel()
    try:
        for name in (topology.queue, topology.dead_letter_queue):
            await channel.queue_delete(name)
    finally:
        await channel.close()
