"""The worker's processing steps, after getsentry/arroyo's strategies.

Every step has the same small lifecycle: ``submit`` a message (raises ``MessageRejected``
when the step is full, and the runner stops taking messages until it has room), ``poll``
for time-based work, ``join`` to finish everything, ``close``. Steps are composed by
passing the next one to the constructor. Every message carries its ``committable``: the
broker deliveries to acknowledge once its data is durable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from core import metrics

log = logging.getLogger(__name__)

T_co = TypeVar("T_co", covariant=True)
T_contra = TypeVar("T_contra", contravariant=True)


# A broker delivery: what gets acknowledged once its events are durable.
Delivery = AbstractIncomingMessage


@dataclass(frozen=True, slots=True)
class Message(Generic[T_co]):
    """A payload and the deliveries to acknowledge once it is stored."""

    payload: T_co
    committable: tuple[Delivery, ...]


class MessageRejected(Exception):  # arroyo's name, kept on purpose
    """The step is full; submit the same message again once it made progress."""


class ProcessingStep(Protocol[T_contra]):
    def submit(self, message: Message[T_contra]) -> None: ...

    def poll(self) -> None: ...

    async def join(self, timeout: float | None = None) -> None: ...

    def close(self) -> None: ...


def deliveries(messages: Sequence[Message[object]]) -> tuple[Delivery, ...]:
    """All deliveries of several messages, in order."""
    return tuple(d for m in messages for d in m.committable)


# What acknowledging a delivery raises when its channel is gone.
_SETTLE_ERRORS = (*aio_pika.exceptions.CONNECTION_EXCEPTIONS, TimeoutError)


def is_message_fault(ex: BaseException) -> bool:
    """Whether ``ex``, raised while decoding or staging one message, can be that message's fault.

    Any ``Exception``, and a panic inside a Rust extension (Polars, pgpq): pyo3 derives its
    ``PanicException`` from ``BaseException``, yet it is raised by odd data like any other
    error. Never ``KeyboardInterrupt``, ``SystemExit`` or ``CancelledError``.
    """
    kind = type(ex)
    return isinstance(ex, Exception) or (
        kind.__name__ == "PanicException" and kind.__module__ == "pyo3_runtime"
    )


def describe(ex: BaseException) -> str:
    """An error as the ``x-error`` header and the logs show it: its type and message."""
    return f"{type(ex).__name__}: {ex}"


async def settle(action: Awaitable[object]) -> None:
    """Await an ack/nack; if the channel is gone the broker redelivers, which is safe."""
    try:
        await action
    except _SETTLE_ERRORS:
        log.warning("could not settle a delivery (channel closed); it will be redelivered")


class InFlight:
    """The deliveries a worker holds: received and not yet acknowledged or returned.

    Whichever step holds them (the inbox, a micro-batch, a write, the way to the DLQ), their
    body bytes count from arrival to ``ack``/``nack`` here, in total
    (``events_worker_inflight_bytes``) and per consumer, which the intake
    (``pipeline/intake.py``) needs to keep the total under EVENTS_WORKER_MAX_INFLIGHT_BYTES.
    A settle that fails (the channel is gone, the broker redelivers) still releases.
    """

    def __init__(self) -> None:
        self._held: dict[Delivery, tuple[str, int]] = {}
        self._by_consumer: dict[str, list[int]] = {}  # consumer tag -> [messages, bytes]
        self.bytes = 0
        self.peak = 0  # the most bytes held at once (tests and logs)
        self.on_change: Callable[[], None] | None = None

    def hold(self, delivery: Delivery) -> None:
        if delivery in self._held:
            return
        tag, size = delivery.consumer_tag or "", len(delivery.body)
        self._held[delivery] = (tag, size)
        counts = self._by_consumer.setdefault(tag, [0, 0])
        counts[0] += 1
        counts[1] += size
        self.bytes += size
        self.peak = max(self.peak, self.bytes)
        metrics.WORKER_INFLIGHT_BYTES.inc(size)
        if self.on_change is not None:
            self.on_change()

    def release(self, delivery: Delivery) -> None:
        entry = self._held.pop(delivery, None)
        if entry is None:
            return
        tag, size = entry
        counts = self._by_consumer[tag]
        counts[0] -= 1
        counts[1] -= size
        if counts[0] == 0:
            del self._by_consumer[tag]
        self.bytes -= size
        metrics.WORKER_INFLIGHT_BYTES.dec(size)
        if self.on_change is not None:
            self.on_change()

    def release_all(self) -> None:
        """Forget every delivery: the connection is closed, the broker has them back."""
        for delivery in list(self._held):
            self.release(delivery)

    def held_by(self, consumer_tag: str) -> tuple[int, int]:
        """Messages and bytes held that consumer ``consumer_tag`` delivered."""
        messages, size = self._by_consumer.get(consumer_tag, (0, 0))
        return messages, size

    async def ack(self, delivery: Delivery) -> None:
        try:
            await settle(delivery.ack())
        finally:
            self.release(delivery)

    async def nack(self, delivery: Delivery) -> None:
        """Return the delivery to its queue (another worker, or this one, takes it again)."""
        try:
            if not delivery.processed:
                await settle(delivery.nack(requeue=True))
        finally:
            self.release(delivery)
