"""The exactly-once write: COPY a micro-batch into a staging table, keep only event_ids
never seen before, insert those, record the batches, commit.

One transaction per micro-batch:

1. ``events_ensure_partitions`` (its own short transaction) creates missing daily
   partitions for the batch's days that are in the hot window (``storage/days.py``).
2. COPY BINARY into the session's temp table ``events_staging`` (ON COMMIT DELETE ROWS).
3. ``INSERT INTO event_ids ... ORDER BY event_id ON CONFLICT DO NOTHING RETURNING`` claims
   the ids. The ledger's primary key makes a concurrent claim of the same id wait for the
   first transaction and then skip it, so an id is claimed once across all workers; sorting
   makes every transaction take those waits in the same order, so two workers cannot
   deadlock on overlapping batches.
4. The claimed rows go into ``events`` and into the read-side rollups (``daily_users``,
   ``daily_event_counts``); per-batch counts go into ``ingest_batches`` and a NOTIFY tells
   waiting API processes. Commit. The caller acks the messages only after this.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from storage.copy import STAGING_COLUMNS, STAGING_DDL, STAGING_TABLE, copy_source
from storage.days import Today, first_hot_day, utc_today
from storage.db import SERVER_SETTINGS
from storage.errors import classify

# Failures on the client side of a connection (as opposed to errors PostgreSQL reports).
_CLIENT_ERRORS = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

_CLAIM_AND_INSERT = f"""
WITH claimed AS (
    INSERT INTO event_ids (event_id)
    SELECT event_id FROM {STAGING_TABLE} ORDER BY event_id
    ON CONFLICT DO NOTHING
    RETURNING event_id
), stored AS (
    INSERT INTO events (event_id, occurred_at, user_id, event_type, properties, received_at,
                        batch_id)
    SELECT s.event_id, s.occurred_at, s.user_id, s.event_type, s.properties, s.received_at,
           s.batch_id
    FROM {STAGING_TABLE} s JOIN claimed USING (event_id)
    RETURNING batch_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, user_id, event_type
), active AS (
    -- Sorted like the ledger claims, so concurrent writers wait in one order (no deadlock).
    INSERT INTO daily_users (day, user_id)
    SELECT DISTINCT day, user_id FROM stored ORDER BY day, user_id
    ON CONFLICT DO NOTHING
    RETURNING day
), active_counted AS (
    INSERT INTO daily_user_counts (day, users)
    SELECT day, count(*) FROM active GROUP BY day
), counted AS (
    INSERT INTO daily_event_counts (day, event_type, events)
    SELECT day, event_type, count(*) FROM stored GROUP BY day, event_type
)
SELECT batch_id, count(*)::int AS inserted FROM stored GROUP BY batch_id
"""

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
class BatchInfo:
    """One queue message's batch inside a micro-batch."""

    batch_id: uuid.UUID
    key_id: str
    received_at: datetime
    events: int  # events the message carried (before removing duplicates)


@dataclass(frozen=True, slots=True)
class StagedRows:
    """A micro-batch ready for COPY: unique event_ids, encoded by ``storage.copy``."""

    payload: bytes  # COPY BINARY of STAGING_COLUMNS
    rows: int
    batches: tuple[BatchInfo, ...]
    days: tuple[date, ...]


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
    # Room for the staging table in memory (must be set before the first temp table use).
    "temp_buffers": "64MB",
    # JIT compilation of a large INSERT ... SELECT costs tens of milliseconds and buys
    # nothing for a plan that is a hash join and an insert.
    "jit": "off",
}


async def init_writer_connection(conn: asyncpg.Connection) -> None:
    """Session set-up for a writer connection (pool ``init``): the staging table."""
    await conn.execute(STAGING_DDL)


async def create_writer_pool(url: str, *, size: int) -> asyncpg.Pool:
    """A pool of writer connections, one per concurrent micro-batch."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=size,
        init=init_writer_connection,
        server_settings=WRITER_SETTINGS,
        # No cached plans: the staging table's size changes from batch to batch and a
        # generic plan made for a small batch would be kept for a large one.
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

    async def _write(self, conn: asyncpg.Connection, rows: StagedRows) -> WriteResult:
        # Partitions only for days of the hot window: cold days go to the default partition
        # (the compactor moves them to the lake), which keeps the number of partitions, and
        # of locks one transaction takes, bounded whatever dates a batch carries.
        first_hot = first_hot_day(self._today(), self._hot_days)
        hot = [d for d in rows.days if d >= first_hot]
        if hot:
            await conn.fetchval("SELECT events_ensure_partitions($1::date[])", hot)
        async with conn.transaction():
            counts: dict[uuid.UUID, int] = {}
            if rows.rows:
                await conn.copy_to_table(
                    STAGING_TABLE,
                    source=copy_source(rows.payload),
                    columns=list(STAGING_COLUMNS),
                    format="binary",
                )
                counts = {r["batch_id"]: r["inserted"] for r in await conn.fetch(_CLAIM_AND_INSERT)}
            outcomes = tuple(
                BatchOutcome(b.batch_id, b.events, counts.get(b.batch_id, 0)) for b in rows.batches
            )
            await conn.fetch(
                _RECORD_BATCHES,
                [b.batch_id for b in rows.batches],
                [b.key_id for b in rows.batches],
                [b.received_at for b in rows.batches],
                [b.events for b in rows.batches],
                [o.inserted for o in outcomes],
                [o.duplicates for o in outcomes],
                self._notify_channel,
            )
        return WriteResult(outcomes)
