"""Step 3: store micro-batches (several at once), then acknowledge their deliveries.

- Transient database errors are retried with exponential back-off and jitter; the
  deliveries stay unacknowledged meanwhile, so nothing is lost if the worker dies. Other
  writers go on with other micro-batches (``EVENTS_WORKER_CONCURRENCY``).
- A lost connection or a server that is down (``DatabaseDown``), and contention (deadlock,
  serialization failure, lock timeout: ``Contention``) are retried for as long as it
  takes: they say nothing about the data. Any other failure (a trigger or
  constraint the operator added, ...) counts an attempt; after ``EVENTS_MAX_ATTEMPTS`` the
  micro-batch is treated as suspect.
- Data the database refuses (``BadData``) and suspect micro-batches are isolated by
  splitting in halves until the offending message is alone; it goes to the dead-letter
  queue with the reason and the attempt count, and the rest is stored.
- Staging (``storage/staging.py``, our own code) raising anything for a micro-batch is
  isolated the same way at once (``staging_failed``): staging the same rows again fails
  again, and letting the error escape would crash the worker, whose restarts would walk
  every message it held towards the delivery limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from core import metrics
from core.errors import ServiceError
from core.retry import Backoff
from pipeline.dead_letters import DeadLetters
from pipeline.message import DecodedBatch
from pipeline.steps import (
    InFlight,
    Message,
    MessageRejected,
    deliveries,
    describe,
    is_message_fault,
)
from pipeline.steps.batching import MicroBatch
from storage.errors import BadData, Contention, DatabaseDown, StorageError, StorageUnavailable
from storage.staging import StagedRows, stage
from storage.writer import EventWriter, WriteResult

log = logging.getLogger(__name__)


def stage_messages(batches: Sequence[DecodedBatch]) -> StagedRows:
    """A micro-batch's messages as one set of rows to write (``storage/staging.py``)."""
    return stage([b.staging() for b in batches])


class Stopping(ServiceError):
    """The worker is shutting down while a write keeps failing; leave it to redelivery."""


class GaveUp(StorageError):
    """A write failed ``EVENTS_MAX_ATTEMPTS`` times for a reason other than a lost server."""

    def __init__(self, attempts: int, error: StorageUnavailable) -> None:
        super().__init__(f"{attempts} attempts failed; last: {error}")
        self.attempts = attempts
        self.error = error


class WriteStep:
    """Runs up to ``concurrency`` micro-batch writes at once; rejects more."""

    def __init__(
        self,
        writer: EventWriter,
        dead_letters: DeadLetters,
        *,
        in_flight: InFlight,
        concurrency: int,
        backoff: Backoff,
        stopping: asyncio.Event,
        max_attempts: int = 8,
        on_stored: Callable[[WriteResult, float], None] | None = None,
    ) -> None:
        self._writer = writer
        self._dead_letters = dead_letters
        self._in_flight = in_flight
        self._concurrency = concurrency
        self._backoff = backoff
        self._max_attempts = max(1, max_attempts)
        self._stopping = stopping
        self._on_stored = on_stored
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, message: Message[MicroBatch]) -> None:
        self._reap()
        if len(self._tasks) >= self._concurrency:
            raise MessageRejected
        task = asyncio.create_task(self._run(message.payload.messages))
        self._tasks.add(task)

    def poll(self) -> None:
        self._reap()

    def _reap(self) -> None:
        for task in [t for t in self._tasks if t.done()]:
            self._tasks.discard(task)
            if not task.cancelled() and (ex := task.exception()) is not None:
                if isinstance(ex, Stopping):
                    continue
                # Only what ``_run`` does not catch gets here (KeyboardInterrupt, SystemExit):
                # stop the worker; the broker redelivers what was unacked.
                raise ex

    async def wait_for_room(self, timeout: float | None) -> None:
        """Return once a write finished (or after ``timeout``); at once if there is room."""
        running = {t for t in self._tasks if not t.done()}
        if len(running) >= self._concurrency:
            await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    async def join(self, timeout: float | None = None) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        self._reap()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _run(self, messages: Sequence[Message[DecodedBatch]]) -> None:
        try:
            await self._store(messages)
        except Stopping:
            raise
        except BaseException as ex:
            if not is_message_fault(ex):
                raise
            # A bug after the data was classified (acknowledging, dead-lettering, a metric):
            # return what is not settled yet to the queue rather than crash the worker. The
            # ledger drops what a redelivery already stored.
            log.exception(
                "micro-batch failed unexpectedly; its messages go back to the queue",
                extra={"messages": len(messages), "error": describe(ex)[:300]},
            )
            for delivery in deliveries(messages):
                await self._in_flight.nack(delivery)

    async def _store(self, messages: Sequence[Message[DecodedBatch]]) -> None:
        started = time.perf_counter()
        batches = [m.payload for m in messages]
        try:
            staged = await asyncio.to_thread(stage_messages, batches)
        except BaseException as ex:
            if not is_message_fault(ex):
                raise
            # Nothing was written: no write attempt to count.
            await self._isolate(messages, reason="staging_failed", error=describe(ex), attempts=0)
            return
        try:
            result = await self._write_retrying(staged)
        except (BadData, GaveUp) as ex:
            reason, attempts = (
                ("write_failed", ex.attempts)
                if isinstance(ex, GaveUp)
                else ("refused_by_database", 1)
            )
            await self._isolate(messages, reason=reason, error=str(ex), attempts=attempts)
            return
        for delivery in deliveries(messages):
            await self._in_flight.ack(delivery)
        seconds = time.perf_counter() - started
        oldest = min(m.payload.meta.received_at for m in messages)
        metrics.observe_commit(oldest.timestamp(), time.time())
        metrics.EVENTS_INSERTED.inc(result.inserted)
        metrics.EVENTS_DUPLICATES.inc(result.duplicates)
        metrics.BATCH_EVENTS.observe(result.inserted + result.duplicates)
        metrics.WRITE_SECONDS.observe(seconds)
        if self._on_stored is not None:
            self._on_stored(result, seconds)

    async def _isolate(
        self, messages: Sequence[Message[DecodedBatch]], *, reason: str, error: str, attempts: int
    ) -> None:
        """Dead-letter the message that fails, store the others: halve until it is alone."""
        if len(messages) == 1:
            log.error(
                "message cannot be stored; sent to the dead-letter queue",
                extra={
                    "batch_id": str(messages[0].payload.meta.batch_id),
                    "reason": reason,
                    "attempts": attempts,
                    "error": error[:300],
                },
            )
            await self._dead_letters.send_now(
                deliveries(messages), reason=reason, error=error, attempts=attempts
            )
            return
        half = len(messages) // 2
        log.warning(
            "micro-batch cannot be stored; isolating the bad message",
            extra={
                "messages": len(messages),
                "reason": reason,
                "first_batch_id": str(messages[0].payload.meta.batch_id),
            },
        )
        await self._store(messages[:half])
        await self._store(messages[half:])

    async def _write_retrying(self, staged: StagedRows) -> WriteResult:
        attempt = 0  # every retry, for the back-off
        counted = 0  # failures that were not a lost server
        while True:
            try:
                return await self._writer.write(staged)
            except StorageUnavailable as ex:
                error = ex
            except BadData:
                raise
            except BaseException as ex:
                if not is_message_fault(ex):
                    raise
                # Not a database error: our own code failed on these rows (preparing them
                # again after duplicates, ...). Counted like an unknown database error, so
                # after EVENTS_MAX_ATTEMPTS the message that causes it is isolated.
                error = StorageUnavailable(f"unexpected error while writing: {describe(ex)}")
                error.__cause__ = ex
            reason = (
                "database_down"
                if isinstance(error, DatabaseDown)
                else "contention"
                if isinstance(error, Contention)
                else "write_error"
            )
            metrics.RETRIES.labels(reason=reason).inc()
            if reason == "write_error":
                counted += 1
                if counted >= self._max_attempts:
                    raise GaveUp(counted, error) from error
            if self._stopping.is_set() and attempt > 0:
                raise Stopping("giving up a write while stopping") from error
            delay = self._backoff.delay(attempt)
            log.warning(
                "database write failed; retrying",
                extra={"error": str(error), "attempt": attempt + 1, "retry_in_s": round(delay, 2)},
            )
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
