"""Where request bodies are decoded: small ones in-line, large ones in decoding processes.

Decoding a large body holds the interpreter for hundreds of milliseconds (orjson, building
columns), and a thread would still hold the GIL the event loop needs: ``/healthz`` and every
small request of the process would wait. So a body larger than ``EVENTS_DECODE_INLINE_BYTES``
(after decompression) goes to a small pool of processes (``EVENTS_DECODE_PROCESSES``) that
runs ``ingest/decode_job.py`` and sends back the queue message; the event loop only moves
bytes.

What a process holds for bodies being read and decoded is capped by a byte budget
(``EVENTS_DECODE_BUDGET_BYTES``), taken before the body is read: a request that does not fit
waits up to ``EVENTS_DECODE_WAIT_SECONDS`` for others to finish, then gets 503 with
``Retry-After``. Memory therefore stays bounded however many large bodies arrive at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from core import metrics
from core.codes import ErrorCode, Refusal
from ingest.body import DecompressedTooLarge, decompressed_limit
from ingest.decode_job import DecodedRequest, DecodeRequest, decode_request

log = logging.getLogger(__name__)


class ByteBudget:
    """A counting semaphore of bytes, first come first served."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.available = capacity
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, amount: int, timeout: float) -> bool:
        """Take ``amount`` bytes, waiting up to ``timeout`` seconds; False if they never fit."""
        amount = min(amount, self.capacity)
        if not self._waiters and amount <= self.available:
            self.available -= amount
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (amount, waiter)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
            return True
        except TimeoutError:
            if waiter.done():  # granted just as the wait ran out: keep it
                return True
            self._waiters.remove(entry)
            self._wake()
            return False
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(amount)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._wake()
            raise

    def release(self, amount: int) -> None:
        self.available = min(self.capacity, self.available + min(amount, self.capacity))
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.available:
            amount, waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self.available -= amount
            waiter.set_result(None)


_PARENT_POLL = 1.0  # seconds between a decoding process's checks that its API process lives


def _prepare_decoding_process(parent: int) -> None:
    """Set up a decoding process: Ctrl-C is left to the API process (which finishes its
    requests), and the process ends when that API process is gone.

    A pool's workers wait for work on a pipe whose writing end they hold themselves, so they
    never see it close: an API process killed without a clean shutdown would leave them (and
    the forkserver, which lives as long as its children) behind for ever.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            time.sleep(_PARENT_POLL)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # a new process owns the pid: ours is gone
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Decoder:
    """Decodes request bodies within the process's byte budget."""

    def __init__(
        self, *, processes: int, inline_bytes: int, budget_bytes: int, wait_seconds: float
    ) -> None:
        self._processes = processes
        self._inline_bytes = inline_bytes
        self._wait = wait_seconds
        self.budget = ByteBudget(budget_bytes)
        self._pool: ProcessPoolExecutor | None = None
        self._owner = 0

    @contextlib.asynccontextmanager
    async def reserve(self, amount: int) -> AsyncIterator[Reservation]:
        """Hold ``amount`` bytes of the budget while a body is read and decoded (503 with
        ``Retry-After`` when they do not become free in time)."""
        if not await self.budget.acquire(amount, self._wait):
            metrics.DECODE_REFUSED.inc()
            raise Refusal(
                ErrorCode.OVERLOADED,
                "this server is decoding as many large bodies as it can hold; retry shortly",
                retry_in=1,
            )
        reservation = Reservation(self.budget, min(amount, self.budget.capacity))
        try:
            yield reservation
        finally:
            reservation.release()

    def _executor(self) -> ProcessPoolExecutor:
        # Created on first use in the process that uses it: gunicorn builds the app before
        # it forks its workers, and a pool does not survive a fork.
        if self._pool is None or self._owner != os.getpid():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["ingest.decode_job"])
            self._pool = ProcessPoolExecutor(
                max_workers=self._processes,
                mp_context=context,
                initializer=_prepare_decoding_process,
                initargs=(os.getpid(),),
            )
            self._owner = os.getpid()
        return self._pool

    async def decode(self, request: DecodeRequest) -> DecodedRequest:
        """The decoded request: in-line when it is small once inflated, else in a process."""
        size = len(request.raw)
        if request.content_encoding:
            if decompressed_limit(size, request.max_bytes, request.max_ratio) <= self._inline_bytes:
                return decode_request(request)
            try:  # PERF: most compressed bodies are small; find out by inflating a little
                return decode_request(request, inflate_limit=self._inline_bytes)
            except DecompressedTooLarge:
                pass
        elif size <= self._inline_bytes:
            return decode_request(request)
        metrics.DECODED_OFF_LOOP.inc()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), decode_request, request)
        except BrokenProcessPool as ex:
            # A decoding process died (killed, out of memory): start a new pool next time.
            log.error(
                "a decoding process died; restarting the pool",
                extra={"bytes": size, "error": str(ex)},
            )
            self._discard()
            raise Refusal(
                ErrorCode.DECODER_UNAVAILABLE,
                "the body could not be decoded because a decoding process stopped; retry",
                retry_in=1,
            ) from ex

    def _discard(self, *, wait: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and self._owner == os.getpid():
            pool.shutdown(wait=wait, cancel_futures=True)

    def close(self) -> None:
        """Stop the decoding processes (waiting for them: a process that exits right after
        would take the pool's management thread with it before it told them to stop)."""
        self._discard(wait=True)


class Reservation:
    """Bytes of the budget held by one request; shrinks to what the body turned out to be."""

    def __init__(self, budget: ByteBudget, amount: int) -> None:
        self._budget = budget
        self.amount = amount

    def shrink_to(self, amount: int) -> None:
        if amount < self.amount:
            self._budget.release(self.amount - amount)
            self.amount = amount

    def release(self) -> None:
        self._budget.release(self.amount)
        self.amount = 0
