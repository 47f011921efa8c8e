"""Step 2: collect decoded messages into a micro-batch, flushed on size OR age."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.message import DecodedBatch
from pipeline.steps import Message, MessageRejected, ProcessingStep


@dataclass(slots=True)
class MicroBatch:
    """Messages that will be stored in one transaction."""

    messages: list[Message[DecodedBatch]] = field(default_factory=list)
    rows: int = 0
    started_at: float = 0.0

    def append(self, message: Message[DecodedBatch], now: float) -> None:
        if not self.messages:
            self.started_at = now
        self.messages.append(message)
        self.rows += message.payload.rows


class BatchStep:
    """Accumulates messages until ``max_rows`` events or ``max_age`` seconds, then submits.

    When the next step is busy the full batch is held and new messages are rejected, which
    pauses the consumer; the broker's prefetch window bounds what is buffered meanwhile.
    """

    def __init__(
        self,
        next_step: ProcessingStep[MicroBatch],
        *,
        max_rows: int,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._next = next_step
        self._max_rows = max_rows
        self._max_age = max_age
        self._clock = clock
        self._batch = MicroBatch()

    def _is_ready(self) -> bool:
        b = self._batch
        return bool(b.messages) and (
            b.rows >= self._max_rows or self._clock() - b.started_at >= self._max_age
        )

    def _flush(self) -> bool:
        """Hand the batch on if the next step takes it; False if it is busy."""
        try:
            self._next.submit(Message(self._batch, ()))
        except MessageRejected:
            return False
        self._batch = MicroBatch()
        return True

    def submit(self, message: Message[DecodedBatch]) -> None:
        if self._batch.rows >= self._max_rows and not self._flush():
            raise MessageRejected
        self._batch.append(message, self._clock())
        if self._batch.rows >= self._max_rows:
            self._flush()

    def poll(self) -> None:
        if self._is_ready():
            self._flush()
        self._next.poll()

    def seconds_until_due(self) -> float | None:
        """How long until the current batch is due by age (None when empty)."""
        if not self._batch.messages:
            return None
        return max(0.0, self._batch.started_at + self._max_age - self._clock())

    async def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else self._clock() + timeout
        if self._batch.messages:
            # Let the writes in flight finish so the last batch has room, then hand it on.
            await self._next.join(timeout)
            self._flush()
        remaining = None if deadline is None else max(0.0, deadline - self._clock())
        await self._next.join(remaining)

    def close(self) -> None:
        self._next.close()
