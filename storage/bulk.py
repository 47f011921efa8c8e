"""Bulk storage for imports: one chunk of validated events per transaction, exactly once.

Per chunk, in one transaction (the lake days it touches are locked first, as the compactor
does, so neither removes the other's files):

1. Claim the chunk's ids in the ``event_ids`` ledger (``storage/ledger.py``); the positions
   whose id was already stored come back as one array: those rows are duplicates.
2. New rows of hot days: COPY into ``events`` with their rollups (``storage/hot_rows.py``,
   as the worker does).
3. New rows of cold days: written straight to the lake (one file per day: temporary name,
   fsync, rename), recorded in ``lake_files`` (with their size and SHA-256).
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

from storage.compactor import lock_lake_day, record_files, remove_orphans, unlock_lake_day
from storage.days import Today, first_hot_day, utc_today
from storage.hot_rows import store_rows
from storage.lake import LAKE_SCHEMA, Lake, LakeFile, uuids_from_bytes
from storage.ledger import claim
from storage.rows import CLAIM_IDS_DDL, ROLLUP_USERS_DDL, RowSet
from storage.writer import WRITER_SETTINGS

_WRITERS = 4  # lake files written at once by one import


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
        await self._conn.execute(CLAIM_IDS_DDL)
        await self._conn.execute(ROLLUP_USERS_DDL)

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

    async def forget(self, source: str) -> None:
        """Drop the chunks recorded for ``source`` (a new run that does not resume)."""
        await self.conn.execute("DELETE FROM import_chunks WHERE source = $1", source)

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
            await lock_lake_day(conn, day, wait=True)
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
                await unlock_lake_day(conn, day)
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
        rows = RowSet(table)
        cold_mask = pc.less(days, pa.scalar(first_hot, pa.date32()))
        # PERF: write the cold rows' files while PostgreSQL claims the ids (they are usually
        # all new); if some turn out to be duplicates, those files are written again.
        cold_all = table.filter(cold_mask)
        speculative = asyncio.create_task(asyncio.to_thread(self._write_cold, cold_all))
        try:
            duplicates = await claim(conn, rows.ids_payload)
        finally:
            files = await speculative
        fresh = rows.without(duplicates)
        fresh_days = _days(fresh.table)
        cold_fresh = pc.less(fresh_days, pa.scalar(first_hot, pa.date32()))
        cold = fresh.table.filter(cold_fresh)
        if cold.num_rows != cold_all.num_rows:
            for f in files:
                self._lake.remove(self._lake.absolute(f.path))
            files = await asyncio.to_thread(self._write_cold, cold)
        hot = RowSet(fresh.table.filter(pc.invert(cold_fresh)))
        await store_rows(conn, hot)
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
            fresh.rows,
            len(duplicates),
            record.rejected,
        )
        return StoredChunk(fresh.rows, len(duplicates), tuple(files))

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


def to_lake_rows(frame: pl.DataFrame) -> pa.Table:
    """A frame with ``STAGING_COLUMNS`` (binary ids) in ``LAKE_SCHEMA``."""
    table = frame.to_arrow()
    return pa.table(
        {
            "event_id": uuids_from_bytes(table.column("event_id")),
            "occurred_at": table.column("occurred_at"),
            "user_id": table.column("user_id").cast(pa.string()),
            "event_type": table.column("event_type").cast(pa.string()),
            "properties": table.column("properties").cast(pa.string()).cast(pa.json_(pa.string())),
            "received_at": table.column("received_at"),
            "batch_id": uuids_from_bytes(table.column("batch_id")),
        },
        schema=LAKE_SCHEMA,
    )
