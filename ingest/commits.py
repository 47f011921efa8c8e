"""``?wait=true``: learn when a worker committed a batch.

Workers NOTIFY ``<prefix>_committed`` with ``batch_id:inserted:duplicates`` in the
transaction that stores the batch. Each API process LISTENs on one connection and wakes
the matching request. A notification can be missed (the listening connection dropped), so
a waiting request also looks the batch up in ``ingest_batches`` about once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from storage.db import connect
from storage.errors import DB_ERRORS

log = logging.getLogger(__name__)

_RECHECK_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class Committed:
    inserted: int
    duplicates: int


class CommitWaiter:
    """Futures for batches a request is waiting for, resolved by NOTIFY or by a lookup."""

    def __init__(self, database_url: str, channel: str, pool: asyncpg.Pool) -> None:
        self._url = database_url
        self._channel = channel
        self._pool = pool
        self._waiting: dict[uuid.UUID, asyncio.Future[Committed]] = {}
        self._listener: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def _ensure_listening(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        async with self._lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            try:
                conn = await connect(self._url, timeout=3)
                await conn.add_listener(self._channel, self._on_notify)
            except DB_ERRORS:
                log.warning("cannot LISTEN for commits; falling back to lookups", exc_info=True)
                return
            self._listener = conn

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for item in payload.split(","):
            try:
                raw_id, inserted, duplicates = item.split(":")
                batch_id = uuid.UUID(raw_id)
            except ValueError:
                continue
            future = self._waiting.get(batch_id)
            if future is not None and not future.done():
                future.set_result(Committed(int(inserted), int(duplicates)))

    async def expect(self, batch_id: uuid.UUID) -> None:
        """Register interest before publishing, so the notification cannot be missed."""
        await self._ensure_listening()
        self._waiting[batch_id] = asyncio.get_running_loop().create_future()

    def forget(self, batch_id: uuid.UUID) -> None:
        future = self._waiting.pop(batch_id, None)
        if future is not None and not future.done():
            future.cancel()

    async def wait(self, batch_id: uuid.UUID, timeout: float) -> Committed | None:
        """The batch's counts once committed, or None after ``timeout`` seconds."""
        future = self._waiting.get(batch_id)
        if future is None:
            raise KeyError(batch_id)
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return await self._lookup(batch_id)
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(
                        asyncio.shield(future), timeout=min(remaining, _RECHECK_EVERY)
                    )
                found = await self._lookup(batch_id)
                if found is not None:
                    return found
                await self._ensure_listening()
        finally:
            self.forget(batch_id)

    async def _lookup(self, batch_id: uuid.UUID) -> Committed | None:
        try:
            async with self._pool.acquire(timeout=2) as conn:
                row = await conn.fetchrow(
                    "SELECT inserted, duplicates FROM ingest_batches WHERE batch_id = $1",
                    batch_id,
                    timeout=2,
                )
        except DB_ERRORS:
            return None
        return None if row is None else Committed(row["inserted"], row["duplicates"])

    async def close(self) -> None:
        for batch_id in list(self._waiting):
            self.forget(batch_id)
        if self._listener is not None and not self._listener.is_closed():
            with contextlib.suppress(*DB_ERRORS):
                await self._listener.close(timeout=2)
