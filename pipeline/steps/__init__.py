"""The worker's processing steps, after getsentry/arroyo's strategies.

Every step has the same small lifecycle: ``submit`` a message (raises ``MessageRejected``
when the step is full, and the runner stops taking messages until it has room), ``poll``
for time-based work, ``join`` to finish everything, ``close``. Steps are composed by
passing the next one to the constructor. Every message carries its ``committable``: the
broker deliveries to acknowledge once its data is durable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

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
