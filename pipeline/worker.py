"""The worker: consume the queue, run the steps, store every event exactly once.

    delivery -> DecodeStep -> BatchStep (rows OR age) -> WriteStep (COPY, commit) -> ack

The runner takes deliveries from the consumer one at a time and submits them; when a
step answers ``MessageRejected`` it stops taking deliveries until a write finishes. What
waits in between is bounded by the consumer's prefetch window, which the intake
(``pipeline/intake.py``) sizes so that the bodies held stay under
``EVENTS_WORKER_MAX_INFLIGHT_BYTES`` (and at most ``EVENTS_PREFETCH`` messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from core.config import Settings
from core.retry import Backoff
from pipeline import broker
from pipeline.dead_letters import DeadLetters
from pipeline.intake import Intake
from pipeline.message import DecodedBatch, decode_message
from pipeline.publisher import Publisher
from pipeline.steps import InFlight, Message, MessageRejected
from pipeline.steps.batching import BatchStep
from pipeline.steps.decode import DecodeStep
from pipeline.steps.write import WriteStep
from pipeline.topology import Topology
from storage.db import connect
from storage.errors import DB_ERRORS
from storage.partitions import upkeep
from storage.writer import EventWriter, WriteResult, create_writer_pool

log = logging.getLogger(__name__)

_IDLE_POLL = 0.5  # seconds between upkeep rounds when no delivery arrives
_PARTITION_UPKEEP = 600.0  # seconds between partition upkeeps (days ahead, indexes behind)


class Worker:
    """One consuming process (run several, on one host or many)."""

    def __init__(
        self, settings: Settings, *, decode: Callable[[bytes], DecodedBatch] = decode_message
    ) -> None:
        self._settings = settings
        self._decode = decode
        self._topology = Topology.from_settings(settings)
        # The deliveries held, and their bytes (``in_flight.peak``: the most at once).
        self.in_flight = InFlight()
        self.stored_events = 0
        self.stored_batches = 0

    def _on_stored(self, result: WriteResult, seconds: float) -> None:
        self.stored_events += result.inserted
        self.stored_batches += len(result.batches)
        log.debug(
            "micro-batch stored",
            extra={
                "inserted": result.inserted,
                "duplicates": result.duplicates,
                "messages": len(result.batches),
                "seconds": round(seconds, 4),
            },
        )

    async def _connect_broker(self, stop: asyncio.Event) -> AbstractRobustConnection | None:
        backoff = Backoff(base=0.5, maximum=10.0)
        attempt = 0
        while not stop.is_set():
            connection = None
            try:
                connection = await broker.connect_robust(
                    self._settings.rabbitmq_url, timeout=5, reconnect_interval=1
                )
                await self._topology.declare(connection)
                return connection
            except aio_pika.exceptions.CONNECTION_EXCEPTIONS as ex:
                if connection is not None:
                    with contextlib.suppress(*aio_pika.exceptions.CONNECTION_EXCEPTIONS):
                        await connection.close()
                delay = backoff.delay(attempt)
                attempt += 1
                log.warning(
                    "RabbitMQ unreachable; retrying",
                    extra={"error": type(ex).__name__, "retry_in_s": round(delay, 2)},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        return None

    async def _partition_upkeep(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                conn = await connect(self._settings.database_url)
                try:
                    await upkeep(conn, ahead_days=self._settings.partitions_ahead_days)
                finally:
                    await conn.close()
                delay = _PARTITION_UPKEEP
            except DB_ERRORS:
                log.warning("partition upkeep failed; retrying", exc_info=True)
                delay = 30.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then finish the current micro-batches and return."""
        s = self._settings
        connection = await self._connect_broker(stop)
        if connection is None:
            return
        pool = await create_writer_pool(s.database_url, size=s.worker_concurrency)
        dlq_publisher = Publisher(s.rabbitmq_url, self._topology, confirm_timeout=s.publish_timeout)
        await dlq_publisher.start()
        dead_letters = DeadLetters(
            dlq_publisher,
            queue=self._topology.dead_letter_queue,
            source_queue=self._topology.queue,
            in_flight=self.in_flight,
        )
        stopping = asyncio.Event()
        write = WriteStep(
            EventWriter(pool, notify_channel=s.commit_channel, hot_days=s.hot_days),
            dead_letters,
            in_flight=self.in_flight,
            concurrency=s.worker_concurrency,
            backoff=Backoff(base=s.retry_base_ms / 1000, maximum=s.retry_max_ms / 1000),
            stopping=stopping,
            max_attempts=s.max_attempts,
            on_stored=self._on_stored,
        )
        batching = BatchStep(write, max_rows=s.batch_max_rows, max_age=s.batch_max_age_ms / 1000)
        decode = DecodeStep(batching, dead_letters, decode=self._decode)

        upkeep = asyncio.create_task(self._partition_upkeep(stop))
        channel = await connection.channel()
        queue = await channel.declare_queue(self._topology.queue, passive=True)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        intake = Intake(
            channel,
            queue,
            inbox,
            self.in_flight,
            max_bytes=s.worker_max_inflight_bytes,
            max_window=s.prefetch,
            # Until a body has been seen, assume the largest the API accepts.
            first_estimate=s.max_body_bytes,
        )
        intake.start()
        log.info(
            "worker consuming",
            extra={
                "queue": self._topology.queue,
                "prefetch": s.prefetch,
                "max_inflight_bytes": s.worker_max_inflight_bytes,
                "concurrency": s.worker_concurrency,
            },
        )
        pending: AbstractIncomingMessage | None = None
        stop_wait = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                decode.poll()
                if pending is None:
                    due = batching.seconds_until_due()
                    if due == 0.0:
                        # The batch is due but every writer is busy: wait for a delivery or
                        # for a write to finish, not in a busy loop.
                        wait = write.wait_for_room(timeout=_IDLE_POLL)
                        pending = await _next_delivery(inbox, stop_wait, _IDLE_POLL, wait)
                    else:
                        pending = await _next_delivery(
                            inbox, stop_wait, _IDLE_POLL if due is None else due
                        )
                    if pending is None:
                        continue
                try:
                    decode.submit(Message(pending, (pending,)))
                    pending = None
                except MessageRejected:
                    await write.wait_for_room(timeout=_IDLE_POLL)
        finally:
            log.info("worker stopping: finishing current micro-batches")
            stopping.set()
            stop_wait.cancel()
            await intake.stop()
            await decode.join(timeout=s.shutdown_timeout)
            decode.close()
            # Deliveries taken but not processed go back to the queue for another worker.
            leftovers = [pending] if pending is not None else []
            while not inbox.empty():
                leftovers.append(inbox.get_nowait())
            for delivery in leftovers:
                await self.in_flight.nack(delivery)
            upkeep.cancel()
            await dlq_publisher.close()
            await connection.close()
            # Writes cut short by the shutdown timeout never settled theirs; with the
            # connection closed the broker has returned them to the queue.
            self.in_flight.release_all()
            await pool.close()
            log.info(
                "worker stopped",
                extra={
                    "stored_events": self.stored_events,
                    "peak_inflight_bytes": self.in_flight.peak,
                    "at": datetime.now(UTC).isoformat(),
                },
            )


async def _next_delivery(
    inbox: asyncio.Queue[AbstractIncomingMessage],
    stop_wait: asyncio.Task[bool],
    timeout: float,
    also: Coroutine[Any, Any, None] | None = None,
) -> AbstractIncomingMessage | None:
    """The next delivery, or None after ``timeout``, once stopping, or once ``also`` is done."""
    if not inbox.empty():
        if also is not None:
            also.close()
        return inbox.get_nowait()
    getter = asyncio.create_task(inbox.get())
    waits: set[asyncio.Future[Any]] = {getter, stop_wait}
    extra = asyncio.ensure_future(also) if also is not None else None
    if extra is not None:
        waits.add(extra)
    done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if extra is not None and not extra.done():
        extra.cancel()
    if getter in done:
        return getter.result()
    getter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await getter
    if getter.done() and not getter.cancelled():
        # It completed while being cancelled: keep the delivery rather than lose it.
        return getter.result()
    return None
