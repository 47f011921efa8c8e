"""The worker's intake: consume so that the bytes held stay under EVENTS_WORKER_MAX_INFLIGHT_BYTES.

RabbitMQ bounds what a consumer holds by message count only, and measured on 3.10:

- ``basic.qos`` with ``prefetch_size`` is NOT_IMPLEMENTED (the broker closes the connection);
- a new prefetch count applies to consumers started after it, never to one already
  consuming (quorum and classic queues alike);
- a quorum queue refuses global qos (NOT_IMPLEMENTED, connection closed);
- a cancelled consumer's unacknowledged deliveries stay valid (they can still be acked) and
  no longer count against the window of a consumer started after it.

So the intake sizes the window itself, one consumer at a time. Every body counts from its
arrival to its ack or nack (``InFlight``). A consumer is started with a prefetch count of
``room // estimate`` (at most EVENTS_PREFETCH), where ``room`` is the cap minus the bytes
held and ``estimate`` the largest body among the last EVENTS_PREFETCH deliveries (before the
first one: the largest body the API accepts). That consumer can then bring at most
``window * estimate <= room``: **the bytes held stay within the cap as long as bodies are no
larger than the recent ones.** When a larger body raises the estimate so that the window no
longer fits, the consumer is cancelled; what the broker had already sent still arrives (at
most that window), so the bound becomes ``cap + window * (largest body - estimate)``. A new
consumer starts once there is room for one body of the estimate, or once nothing is held: a
single body larger than the cap is then taken alone, never a deadlock. When bodies shrink
so that a window twice as large would fit, the consumer is replaced by one with that window.

Consumers are not restored by aio-pika after a reconnect (``robust=False``): the deliveries of
the lost channel are still being processed (they can no longer be acked and are released as
they finish), and a restored consumer's window would come on top of them. The intake starts a
new consumer instead, sized to the room they leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustQueue

from core import metrics
from pipeline.steps import Delivery, InFlight

log = logging.getLogger(__name__)

_RETRY = 1.0  # seconds before trying again after the channel refused a cancel or consume
_RPC_TIMEOUT = 10.0  # seconds a basic.qos / consume / cancel may take


class RecentMax:
    """The largest of the last ``length`` values (amortised O(1) per value)."""

    def __init__(self, length: int, initial: int) -> None:
        self._length = max(1, length)
        self._initial = initial
        self._seen = 0
        self._window: deque[tuple[int, int]] = deque()  # (position, value), values decreasing

    def add(self, value: int) -> None:
        while self._window and self._window[-1][1] <= value:
            self._window.pop()
        self._window.append((self._seen, value))
        self._seen += 1
        while self._window[0][0] <= self._seen - 1 - self._length:
            self._window.popleft()

    @property
    def value(self) -> int:
        return self._window[0][1] if self._window else self._initial


class Intake:
    """Starts, resizes and cancels the consumer of ``queue``; deliveries go to ``inbox``."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        queue: AbstractRobustQueue,
        inbox: asyncio.Queue[Delivery],
        in_flight: InFlight,
        *,
        max_bytes: int,
        max_window: int,
        first_estimate: int,
    ) -> None:
        self._channel = channel
        self._queue = queue
        self._inbox = inbox
        self._in_flight = in_flight
        self._max_bytes = max_bytes
        self._max_window = max_window
        self._sizes = RecentMax(max_window, max(1, first_estimate))
        self._tag: str | None = None
        self._window = 0
        self._wake = asyncio.Event()
        self._reopened = 0  # times the channel was reopened (its consumers are gone then)
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def window(self) -> int:
        """The prefetch count of the current consumer (0: not consuming)."""
        return self._window if self._tag is not None else 0

    def start(self) -> None:
        self._in_flight.on_change = self._wake.set
        self._channel.reopen_callbacks.add(self._on_reopen)
        self._task = asyncio.create_task(self._control())
        self._wake.set()

    def _on_reopen(self, _channel: Any) -> None:
        self._reopened += 1
        self._tag = None
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the consumer for good (deliveries already taken stay with the worker)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._channel.reopen_callbacks.discard(self._on_reopen)
        self._in_flight.on_change = None

    async def _on_delivery(self, delivery: Delivery) -> None:
        self._sizes.add(len(delivery.body))
        self._in_flight.hold(delivery)
        await self._inbox.put(delivery)

    def _window_for(self, held: int, estimate: int) -> int:
        """The window a consumer started now may have (0: not yet)."""
        if held == 0:
            return max(1, min(self._max_window, self._max_bytes // estimate))
        return min(self._max_window, max(0, self._max_bytes - held) // estimate)

    async def _control(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                await self._cancel()
                return
            try:
                await self._adjust()
            except Exception:  # the broker or the client: never stop taking deliveries for good
                log.warning("could not adjust the consumer; retrying", exc_info=True)
                asyncio.get_running_loop().call_later(_RETRY, self._wake.set)

    async def _adjust(self) -> None:
        estimate = self._sizes.value
        held = self._in_flight.bytes
        if self._tag is not None:
            _, mine = self._in_flight.held_by(self._tag)
            others = held - mine  # held from consumers cancelled before: only decreases
            alone = self._window == 1 and others == 0
            if not alone and others + self._window * estimate > self._max_bytes:
                # Bodies grew past what this window was sized for.
                metrics.WORKER_INTAKE_PAUSES.inc()
                log.info(
                    "bodies grew: pausing the consumer",
                    extra={"window": self._window, "estimate": estimate, "held": held},
                )
                await self._cancel()
            elif self._window_for(held, estimate) >= 2 * self._window:
                await self._cancel()  # bodies shrank: start again with a larger window
        if self._tag is None:
            # Read again: deliveries of a cancelled consumer arrive until its cancel-ok.
            window = self._window_for(self._in_flight.bytes, self._sizes.value)
            if window > 0:
                await self._consume(window)

    async def _consume(self, window: int) -> None:
        # Per consumer (global_=False): applies to the consumer started next, and a robust
        # channel applies it again before it restores the consumer after a reconnect.
        reopened = self._reopened
        await self._channel.set_qos(prefetch_count=window, timeout=_RPC_TIMEOUT)
        tag = await self._queue.consume(self._on_delivery, timeout=_RPC_TIMEOUT, robust=False)
        if self._reopened != reopened:
            return  # that consumer was on the lost channel; the reopening woke us already
        self._tag = tag
        self._window = window
        log.debug("consuming", extra={"window": window, "held": self._in_flight.bytes})

    async def _cancel(self) -> None:
        tag, self._tag = self._tag, None
        if tag is not None:
            # A cancel that fails leaves nothing to undo: aio-pika forgets the consumer first
            # (no restore after a reconnect), and a channel that is gone has no consumer.
            with contextlib.suppress(*aio_pika.exceptions.CONNECTION_EXCEPTIONS):
                await self._queue.cancel(tag, timeout=_RPC_TIMEOUT)
