"""Publishing accepted batches: persistent messages, publisher confirms, mandatory routing.

``publish`` returns only once RabbitMQ confirmed the message (it is on disk in a durable
queue); every way that can fail becomes ``BrokerUnavailable`` so the API answers 503 and
the client retries (duplicates are removed downstream by event_id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from datetime import datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from core import metrics
from core.errors import TransientError
from pipeline import broker
from pipeline.message import CONTENT_TYPE, MESSAGE_TYPE
from pipeline.topology import Topology

log = logging.getLogger(__name__)

_PUBLISH_ERRORS = (
    *aio_pika.exceptions.CONNECTION_EXCEPTIONS,
    aio_pika.exceptions.DeliveryError,
    aio_pika.exceptions.PublishError,
    asyncio.TimeoutError,
)


class BrokerUnavailable(TransientError):
    """RabbitMQ did not take the message (down, unreachable, refusing or too slow)."""


_RENEW_EVERY = 1.0  # seconds between two channels opened because of nacks


class QueueFull(BrokerUnavailable):
    """The queue refused the message: it is at its length limit (``x-overflow: reject-publish``)."""


class Publisher:
    """One robust connection and one confirming channel, shared by all requests of a process."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        confirm_timeout: float = 10.0,
        connect_timeout: float = 3.0,
        retry_interval: float = 1.0,
    ) -> None:
        self._url = url
        self._topology = topology
        self._confirm_timeout = confirm_timeout
        self._connect_timeout = connect_timeout
        self._retry_interval = retry_interval
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        # Kept for reading queue depths, and the AMQP channel under it that was last used.
        self._depths: AbstractRobustChannel | None = None
        self._depths_underlay: aiormq.abc.AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._last_attempt = 0.0
        self._closing = False
        self._channel_renewed = -math.inf  # monotonic time a nack last renewed the channel

    @property
    def ready(self) -> bool:
        """Whether a publish could be attempted right now."""
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def start(self) -> None:
        """Try to connect once; if the broker is down, requests retry the connection later."""
        try:
            await self._ensure_connected()
        except BrokerUnavailable as ex:
            log.warning(
                "RabbitMQ unreachable at start-up; will retry on demand", extra={"error": str(ex)}
            )

    async def _ensure_connected(self) -> AbstractRobustChannel:
        if self.ready and self._channel is not None:
            return self._channel
        if self._connection is not None and not self._connection.is_closed:
            # A robust connection is restoring itself; don't open a second one.
            raise BrokerUnavailable("RabbitMQ connection is being restored")
        async with self._lock:
            if self.ready and self._channel is not None:
                return self._channel
            if self._closing:
                raise BrokerUnavailable("publisher is closing")
            if time.monotonic() - self._last_attempt < self._retry_interval:
                raise BrokerUnavailable("RabbitMQ unreachable (retrying shortly)")
            self._last_attempt = time.monotonic()
            try:
                connection = await broker.connect_robust(
                    self._url, timeout=self._connect_timeout, reconnect_interval=1
                )
            except _PUBLISH_ERRORS as ex:
                raise BrokerUnavailable(f"cannot connect to RabbitMQ: {type(ex).__name__}") from ex
            try:
                await self._topology.declare(connection)
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                metrics.BROKER_CHANNELS_OPENED.inc()
            except _PUBLISH_ERRORS as ex:
                await connection.close()
                raise BrokerUnavailable(f"cannot set up RabbitMQ: {type(ex).__name__}") from ex
            connection.reconnect_callbacks.add(self._on_reconnect)
            self._connection, self._channel = connection, channel
            log.info("connected to RabbitMQ", extra={"queue": self._topology.queue})
            return channel

    async def _on_reconnect(self, connection: Any) -> None:
        # The broker may have lost its definitions (a new node): declare them again.
        try:
            await self._topology.declare(connection)
        except _PUBLISH_ERRORS:
            log.warning("could not re-declare queues after reconnecting", exc_info=True)

    async def publish(
        self,
        body: bytes,
        *,
        message_id: str,
        timestamp: datetime,
        headers: dict[str, Any],
        routing_key: str | None = None,
        content_type: str | None = CONTENT_TYPE,
        message_type: str | None = MESSAGE_TYPE,
    ) -> None:
        """Publish one persistent message and wait for the broker's confirm."""
        channel = await self._ensure_connected()
        message = aio_pika.Message(
            body,
            content_type=content_type,
            type=message_type,
            message_id=message_id,
            timestamp=timestamp,
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await channel.default_exchange.publish(
                message,
                routing_key=routing_key or self._topology.queue,
                mandatory=True,
                timeout=self._confirm_timeout,
            )
        except aio_pika.exceptions.DeliveryError as ex:
            # A nack: the queue refused it (full with reject-publish, or an internal error).
            await self._renew_channel_after_nack(channel)
            raise QueueFull("RabbitMQ refused the message: the queue is full") from ex
        except aio_pika.exceptions.PublishError as ex:
            raise BrokerUnavailable("the queue does not exist") from ex
        except _PUBLISH_ERRORS as ex:
            raise BrokerUnavailable(f"publish failed: {type(ex).__name__}") from ex

    async def _renew_channel_after_nack(self, channel: AbstractRobustChannel) -> None:
        """Open a new publishing channel after a nack, at most once a second.

        RabbitMQ 3.10: a channel that published to a quorum queue while it elected a new
        leader (its leader's node killed) goes on nacking every message for good, while a new
        channel on the same connection publishes at once (``docs/reliability.md``, "A
        cluster"). A queue that is really full nacks the new channel too: the cost of that
        is one channel a second.
        """
        now = time.monotonic()
        if now - self._channel_renewed < _RENEW_EVERY or self._connection is None:
            return
        self._channel_renewed = now
        async with self._lock:
            if self._channel is not channel or self._connection.is_closed:
                return  # replaced meanwhile
            try:
                fresh = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            except _PUBLISH_ERRORS:
                log.warning("could not open a new channel after a nack", exc_info=True)
                return
            metrics.BROKER_CHANNELS_OPENED.inc()
            self._channel = fresh
        with contextlib.suppress(*_PUBLISH_ERRORS):
            await channel.close()

    async def queue_depths(self) -> dict[str, int]:
        """Messages ready in the queue and in the DLQ, by a passive declare of each.

        On one channel kept for it, opened at the first call and again only once it closed:
        a channel per call is the churn RabbitMQ advises against, and /metrics is scraped
        by every monitoring system there is.
        """
        await self._ensure_connected()
        channel = await self._depths_channel()
        depths = {}
        for name in (self._topology.queue, self._topology.dead_letter_queue):
            declared = await asyncio.wait_for(
                channel.queue_declare(name, passive=True), self._connect_timeout
            )
            depths[name] = int(declared.message_count or 0)
        return depths

    async def _depths_channel(self) -> aiormq.abc.AbstractChannel:
        if self._connection is None:
            raise BrokerUnavailable("not connected")
        if self._depths is None or self._depths.is_closed:
            self._depths = await self._connection.channel()
            metrics.BROKER_CHANNELS_OPENED.inc()
            self._depths_underlay = None
        # The AMQP channel itself: aio-pika answers a passive declare of a queue it declared
        # before from its cache, with the count of then.
        underlay = await self._depths.get_underlay_channel()
        if self._depths_underlay is not None and underlay is not self._depths_underlay:
            # The robust channel opened a new one by itself (after a reconnect, or after a
            # declare of a missing queue closed the old one).
            metrics.BROKER_CHANNELS_OPENED.inc()
        self._depths_underlay = underlay
        return underlay

    async def close(self) -> None:
        self._closing = True
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = self._depths = None
        self._depths_underlay = None
