"""Bulk storage for imports: one chunk of validated events per transaction, exactly once.

Per chunk, in one transaction (the lake days it touches are locked first, as the compactor
does, so neither removes the other's files):

1. COPY the chunk's ``(pos, event_id)`` into the temp table ``import_ids`` and claim the ids
   in the ``event_ids`` ledger (sorted, ``ON CONFLICT DO NOTHING``); the positions whose id
   was already stored come back as one array: those rows are duplicates.
2. New rows of hot days: COPY into ``events_staging`` and insert into ``events`` with the
   rollups (the worker's statement, minus the claim already made).
3. New rows of cold days: written straight to the lake (one file per day: temporary name,
   fsync, rename), recorded in ``lake_files``.
4. The chunk is recorded in ``import_chunks`` (what ``--resume`` reads). Commit.

A crash before the commit leaves no claim, no row and only unlisted files (removed by the
next writer of that day); after it, the chunk is complete.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

import asyncpg
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from storage.compactor import LAKE_DAY_LOCK, record_files, remove_orphans
from storage.copy import (
    STAGING_COLUMNS,
    STAGING_DDL,
    STAGING_TABLE,
    copy_source,
    encode_binary,
    encode_copy,
)
from storage.days import Today, first_hot_day, utc_today
from storage.lake import LAKE_SCHEMA, Lake, LakeFile
from storage.writer import WRITER_SETTINGS

_WRITERS = 4  # lake files written at once by one import

_IDS_DDL = """
CREATE TEMP TABLE IF NOT EXISTS import_ids (
    pos      integer NOT NULL,
    event_id uuid    NOT NULL
) ON COMMIT DELETE ROWS
"""

# PERF: claiming with a plain INSERT after looking the ids up is about 40 % faster than
# ON CONFLICT DO NOTHING (no speculative insertion). Should a concurrent writer store one
# of the ids in between, the INSERT fails with a unique violation and the chunk is claimed
# again with _CLAIM, inside a savepoint.
_KNOWN = """
SELECT coalesce(array_agg(i.pos), '{}'::integer[])
FROM import_ids i WHERE EXISTS (SELECT 1 FROM event_ids e WHERE e.event_id = i.event_id)
"""
_CLAIM_UNKNOWN = """
INSERT INTO event_ids (event_id)
SELECT event_id FROM import_ids WHERE pos <> ALL($1::integer[]) ORDER BY event_id
"""
_CLAIM = """
WITH claimed AS (
    INSERT INTO event_ids (event_id)
    SELECT event_id FROM import_ids ORDER BY event_id
    ON CONFLICT DO NOTHING
    RETURNING event_id
)
SELECT coalesce(array_agg(i.pos), '{}'::integer[])
FROM import_ids i WHERE NOT EXISTS (SELECT 1 FROM claimed c WHERE c.event_id = i.event_id)
"""

# The worker's insert (storage/writer.py) for rows whose ids are already claimed.
_INSERT_CLAIMED = f"""
WITH stored AS (
    INSERT INTO events (event_id, occurred_at, user_id, event_type, properties, received_at,
                        batch_id)
    SELECT event_id, occurred_at, user_id, event_type, properties, received_at, batch_id
    FROM {STAGING_TABLE}
    RETURNING (occurred_at AT TIME ZONE 'UTC')::date AS day, user_id, event_type
), active AS (
    INSERT INTO daily_users (day, user_id)
    SELECT DISTINCT day, user_id FROM stored ORDER BY day, user_id
    ON CONFLICT DO NOTHING
    RETURNING day
), active_counted AS (
    INSERT INTO daily_user_counts (day, users)
    SELECT day, count(*) FROM active GROUP BY day
)
INSERT INTO daily_event_counts (day, event_type, events)
SELECT day, event_type, count(*) FROM stored GROUP BY day, event_type
"""


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """What ``import_chunks`` keeps of a committed chunk."""

    chunk: int
    resume_at: int
    records: int
    next_line: int
    imported: int
    duplicates: int
    rejected: int


@dataclass(frozen=True, slots=True)
class StoredChunk:
    imported: int
    duplicates: int
    files: tuple[LakeFile, ...]


def _days(table: pa.Table) -> pa.Array:
    return pc.cast(pc.cast(table.column("occurred_at"), pa.timestamp("us")), pa.date32())


class BulkStore:
    """One connection storing chunks one after the other."""

    def __init__(
        self, database_url: str, lake: Lake, *, hot_days: int, today: Today = utc_today
    ) -> None:
        self._url = database_url
        self._lake = lake
        self._hot_days = hot_days
        self._today = today
        self._conn: asyncpg.Connection | None = None

    async def open(self) -> None:
        self._conn = await asyncpg.connect(
            self._url,
            server_settings={**WRITER_SETTINGS, "work_mem": "64MB"},
            statement_cache_size=0,
        )
        await self._conn.execute(STAGING_DDL)
        await self._conn.execute(_IDS_DDL)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    @property
    def conn(self) -> asyncpg.Connection:
        if self._conn is None:
            raise RuntimeError("BulkStore.open() first")
        return self._conn

    async def committed(self, source: str) -> list[ChunkRecord]:
        rows = await self.conn.fetch(
            "SELECT chunk, resume_at, records, next_line, imported, duplicates, rejected "
            "FROM import_chunks WHERE source = $1 ORDER BY chunk",
            source,
        )
        return [ChunkRecord(**dict(r)) for r in rows]

    async def store(self, source: str, record: ChunkRecord, table: pa.Table) -> StoredChunk:
        """Store a chunk (``STAGING_COLUMNS``, unique event_ids) and record it, atomically.

        ``record.imported`` / ``duplicates`` are ignored: they are computed here.
        """
        conn = self.conn
        first_hot = first_hot_day(self._today(), self._hot_days)
        days = _days(table)
        day_values = sorted({d for d in pc.unique(days).to_pylist() if d is not None})
        hot_days = [d for d in day_values if d >= first_hot]
        cold_days = [d for d in day_values if d < first_hot]
        if hot_days:
            await conn.fetchval("SELECT events_ensure_partitions($1::date[])", hot_days)
        for day in cold_days:  # sorted: importers never deadlock on each other
            await conn.execute("SELECT pg_advisory_lock($1, $2)", LAKE_DAY_LOCK, day.toordinal())
        try:
            for day in cold_days:
                await remove_orphans(conn, self._lake, day)
            async with conn.transaction():
                stored = await self._store(
                    conn,
                    source=source,
                    record=record,
                    table=table,
                    days=days,
                    first_hot=first_hot,
                )
        finally:
            for day in cold_days:
                await conn.execute(
                    "SELECT pg_advisory_unlock($1, $2)", LAKE_DAY_LOCK, day.toordinal()
                )
        return stored

    async def _store(
        self,
        conn: asyncpg.Connection,
        *,
        source: str,
        record: ChunkRecord,
        table: pa.Table,
        days: pa.Array,
        first_hot: date,
    ) -> StoredChunk:
        positions = pa.array(range(table.num_rows), pa.int32())
        ids = pa.table({"pos": positions, "event_id": table.column("event_id")})
        await conn.copy_to_table(
            "import_ids",
            source=copy_source(encode_binary(ids)),
            columns=["pos", "event_id"],
            format="binary",
        )
        cold_mask = pc.less(days, pa.scalar(first_hot, pa.date32()))
        # PERF: write the cold rows' files while PostgreSQL claims the ids (they are usually
        # all new); if some turn out to be duplicates, those files are written again.
        cold_all = table.filter(cold_mask)
        speculative = asyncio.create_task(asyncio.to_thread(self._write_cold, cold_all))
        try:
            duplicates = await _claim(conn)
        finally:
            files = await speculative
        keep = pc.invert(pc.is_in(positions, pa.array(duplicates, pa.int32())))
        fresh = table.filter(keep)
        cold = fresh.filter(cold_mask.filter(keep))
        if cold.num_rows != cold_all.num_rows:
            for f in files:
                self._lake.remove(self._lake.absolute(f.path))
            files = await asyncio.to_thread(self._write_cold, cold)
        hot = fresh.filter(pc.invert(cold_mask.filter(keep)))
        if hot.num_rows:
            await conn.copy_to_table(
                STAGING_TABLE,
                source=copy_source(encode_copy(hot)),
                columns=list(STAGING_COLUMNS),
                format="binary",
            )
            await conn.execute(_INSERT_CLAIMED)
        if files:
            await record_files(conn, files)
        await conn.execute(
            "INSERT INTO import_chunks (source, chunk, resume_at, records, next_line, imported, "
            "duplicates, rejected) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            source,
            record.chunk,
            record.resume_at,
            record.records,
            record.next_line,
            fresh.num_rows,
            len(duplicates),
            record.rejected,
        )
        return StoredChunk(fresh.num_rows, len(duplicates), tuple(files))

    def _write_cold(self, cold: pa.Table) -> list[LakeFile]:
        """One file per day; days written in parallel (most of the time is fsync latency)."""
        if not cold.num_rows:
            return []
        frame = pl.DataFrame(pl.from_arrow(cold)).with_columns(_day=pl.col("occurred_at").dt.date())
        parts = frame.partition_by("_day", as_dict=True)
        with ThreadPoolExecutor(max_workers=_WRITERS) as pool:
            return list(
                pool.map(
                    lambda item: self._lake.write(item[0][0], to_lake_rows(item[1].drop("_day"))),
                    parts.items(),
                )
            )


async def _claim(conn: asyncpg.Connection) -> list[int]:
    """Claim the ids in ``import_ids``; the positions of those already stored."""
    try:
        async with conn.transaction():  # a savepoint
            known: list[int] = await conn.fetchval(_KNOWN)
            await conn.execute(_CLAIM_UNKNOWN, known)
            return known
    except asyncpg.UniqueViolationError:
        claimed: list[int] = await conn.fetchval(_CLAIM)
        return claimed


def to_lake_rows(frame: pl.DataFrame) -> pa.Table:
    """A frame with ``STAGING_COLUMNS`` (binary ids) in ``LAKE_SCHEMA``."""
    table = frame.to_arrow()

    def uuids(name: str) -> pa.Array:
        raw = table.column(name).combine_chunks().cast(pa.binary(16))
        return pa.ExtensionArray.from_storage(pa.uuid(), raw)

    return pa.table(
        {
            "event_id": uuids("event_id"),
            "occurred_at": table.column("occurred_at"),
            "user_id": table.column("user_id").cast(pa.string()),
            "event_type": table.column("event_type").cast(pa.string()),
            "properties": table.column("properties").cast(pa.string()).cast(pa.json_(pa.string())),
            "received_at": table.column("received_at"),
            "batch_id": uuids("batch_id"),
        },
        schema=LAKE_SCHEMA,
    )
