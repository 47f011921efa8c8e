"""The exactly-once write of a micro-batch: claim the event_ids, store the new rows, record
the batches, commit.

One transaction per micro-batch:

1. ``events_ensure_partitions`` (its own short transaction) creates missing daily
   partitions for the batch's days that are in the hot window (``storage/days.py``).
2. ``storage/ledger.py`` claims the ids in ``event_ids``: the ledger's primary key makes a
   concurrent claim of the same id wait for the first transaction and then skip it, so an
   id is claimed once across all workers; claims are made in id order, so two workers
   cannot deadlock on overlapping batches.
3. ``storage/hot_rows.py`` COPYs the new rows straight into ``events`` and updates the
   read-side rollups; per-batch counts go into ``ingest_batches`` and a NOTIFY tells
   waiting API processes. Commit. The caller acks the messages only after this.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import asyncpg

from storage.days import Today, first_hot_day, utc_today
from storage.db import SERVER_SETTINGS
from storage.errors import classify
from storage.hot_rows import store_rows
from storage.ledger import claim
from storage.rows import CLAIM_IDS_DDL, ROLLUP_USERS_DDL
from storage.staging import StagedRows

# Failures on the client side of a connection (as opposed to errors PostgreSQL reports).
_CLIENT_ERRORS = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

# Record each batch once (a redelivered message keeps its first counts) and announce it on
# the commit channel: payload "batch_id:inserted:duplicates,..." in chunks under 8000 bytes.
_RECORD_BATCHES = """
WITH recorded AS (
    INSERT INTO ingest_batches (batch_id, key_id, received_at, events, inserted, duplicates)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int[], $5::int[],
                         $6::int[])
    ORDER BY 1
    ON CONFLICT (batch_id) DO NOTHING
    RETURNING batch_id, inserted, duplicates
), numbered AS (
    SELECT batch_id, inserted, duplicates, (row_number() OVER ()) / 100 AS chunk
    FROM recorded
)
SELECT pg_notify($7, string_agg(batch_id::text || ':' || inserted || ':' || duplicates, ','))
FROM numbered GROUP BY chunk
"""


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    batch_id: uuid.UUID
    events: int
    inserted: int

    @property
    def duplicates(self) -> int:
        return self.events - self.inserted


@dataclass(frozen=True, slots=True)
class WriteResult:
    batches: tuple[BatchOutcome, ...]

    @property
    def inserted(self) -> int:
        return sum(b.inserted for b in self.batches)

    @property
    def duplicates(self) -> int:
        return sum(b.duplicates for b in self.batches)


# Sent in the start-up packet, so they are also what the pool's RESET ALL returns to.
WRITER_SETTINGS = {
    **SERVER_SETTINGS,
    # Room for the temp tables in memory (must be set before the first temp table use).
    "temp_buffers": "64MB",
    # JIT compilation of a large statement costs tens of milliseconds and buys nothing for
    # these plans (anti joins and inserts).
    "jit": "off",
}


async def init_writer_connection(conn: asyncpg.Connection) -> None:
    """Session set-up for a writer connection (pool ``init``): its temp tables."""
    await conn.execute(CLAIM_IDS_DDL)
    await conn.execute(ROLLUP_USERS_DDL)


async def create_writer_pool(url: str, *, size: int) -> asyncpg.Pool:
    """A pool of writer connections, one per concurrent micro-batch."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=size,
        init=init_writer_connection,
        server_settings=WRITER_SETTINGS,
        # No cached plans: the temp tables' sizes change from batch to batch and a generic
        # plan made for a small batch would be kept for a large one.
        statement_cache_size=0,
        command_timeout=300,
    )
    return pool


class EventWriter:
    """Stores micro-batches exactly once (see the module docstring for how)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        notify_channel: str,
        hot_days: int = 7,
        today: Today = utc_today,
    ) -> None:
        self._pool = pool
        self._notify_channel = notify_channel
        self._hot_days = hot_days
        self._today = today

    async def write(self, rows: StagedRows) -> WriteResult:
        """Store one micro-batch in one transaction; raises StorageUnavailable or BadData."""
        try:
            async with self._pool.acquire() as conn:
                try:
                    return await self._write(conn, rows)
                except _CLIENT_ERRORS:
                    # The connection broke mid-operation: its protocol state is unknown, so
                    # it must not go back to the pool.
                    conn.terminate()
                    raise
        except (asyncpg.PostgresError, *_CLIENT_ERRORS) as ex:
            raise classify(ex) from ex

    async def _write(self, conn: asyncpg.Connection, staged: StagedRows) -> WriteResult:
        # Partitions only for days of the hot window: cold days go to the default partition
        # (the compactor moves them to the lake), which keeps the number of partitions, and
        # of locks one transaction takes, bounded whatever dates a batch carries.
        first_hot = first_hot_day(self._today(), self._hot_days)
        hot = [d for d in staged.rows.days if d >= first_hot]
        if hot:
            await conn.fetchval("SELECT events_ensure_partitions($1::date[])", hot)
        async with conn.transaction():
            fresh = staged.rows
            if fresh.rows:
                known = await claim(conn, fresh.ids_payload)
                if known:
                    fresh = await asyncio.to_thread(lambda: fresh.without(known).prepare())
                await store_rows(conn, fresh)
            counts = fresh.per_batch if fresh.rows else {}
            outcomes = tuple(
                BatchOutcome(b.batch_id, b.events, counts.get(b.batch_id, 0))
                for b in staged.batches
            )
            await conn.fetch(
                _RECORD_BATCHES,
                [b.batch_id for b in staged.batches],
                [b.key_id for b in staged.batches],
                [b.received_at for b in staged.batches],
                [b.events for b in staged.batches],
                [o.inserted for o in outcomes],
                [o.duplicates for o in outcomes],
                self._notify_channel,
            )
        return WriteResult(outcomes)
