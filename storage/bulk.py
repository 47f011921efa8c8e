"""Bulk storage for imports: one chunk of validated events per transaction, exactly once.

Per chunk, in one transaction (the lake days it touches are locked first, as the compactor
does, so neither removes the other's files):

1. Claim the chunk's ids in the ``event_ids`` ledger (``storage/ledger.py``); the positions
   whose id was already stored come back as one array: those rows are duplicates.
2. New rows of hot days: COPY into ``events`` with their rollups (``storage/hot_rows.py``,
   as the worker does).
3. New rows of cold days: written straight to the lake (one file per day: temporary name,
   fsync, rename), recorded in ``lake_files`` (with their size and SHA-256). Their
   properties are first sent through PostgreSQL's ``jsonb`` and back (``lake_properties``),
   so the files hold the very text the compactor writes for rows that passed through
   ``events``.
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
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from storage.arrow_copy import copy_to_arrow
from storage.compactor import lock_lake_day, record_files, remove_orphans, unlock_lake_day
from storage.copy import copy_source, encode_binary
from storage.days import Today, first_hot_day, utc_today
from storage.hot_rows import store_rows
from storage.lake import LAKE_SCHEMA, PROPERTIES_TEXT, Lake, LakeFile, uuids_from_bytes
from storage.ledger import claim
from storage.rows import CLAIM_IDS_DDL, ROLLUP_USERS_DDL, RowSet
from storage.writer import WRITER_SETTINGS

_WRITERS = 4  # lake files written at once by one import

# The column has the type and name of ``events.properties``, so the texts are parsed as the
# worker's rows are (pgpq's jsonb COPY) and printed by the compactor's own expression.
LAKE_PROPERTIES_DDL = """
CREATE TEMP TABLE IF NOT EXISTS lake_properties (
    pos        integer NOT NULL,
    properties jsonb   NOT NULL
) ON COMMIT DELETE ROWS
"""
_LAKE_PROPERTIES_SQL = f"SELECT {PROPERTIES_TEXT} FROM lake_properties ORDER BY pos"


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
        await self._conn.execute(LAKE_PROPERTIES_DDL)

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
        cold_mask = pc.less(days, pa.scalar(first_hot, pa.date32()))
        if pc.any(cold_mask).as_py():
            # Before the speculative write below: every file written holds PostgreSQL's text.
            table = await _with_lake_properties(conn, table, cold_mask)
        rows = RowSet(table)
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


async def lake_properties(conn: asyncpg.Connection, texts: pa.Array) -> pa.Array:
    """The lake's text of each JSON object text of ``texts``, in order: PostgreSQL's ``jsonb``
    output of it, exactly what the compactor writes for the same text stored in ``events``.

    Why PostgreSQL itself: analytics compares property values as text, and jsonb rewrites
    what clients send (keys shorter first, the last duplicate kept, numbers as ``numeric``
    prints them: ``1e16`` -> ``10000000000000000``, ``-0.0`` -> ``0.0``, ``1.50`` kept).
    Imitating that would be right only as far as the imitation goes; here the text comes
    from the same parser (pgpq's jsonb COPY, as the worker sends rows), the same expression
    (``PROPERTIES_TEXT``) and the same reader (``copy_to_arrow``) as the compactor's.

    PERF: column-wise, one binary COPY in and one CSV COPY out (about 0.45 s per 220,000
    small objects here); no row becomes a Python object. Must run inside the caller's
    transaction, at most once per transaction (``lake_properties`` is emptied at commit);
    ``pos`` keeps the answer in the order of ``texts``.
    """
    n = len(texts)
    positions = pa.array(np.arange(n, dtype=np.int32))
    payload = encode_binary(
        pa.table({"pos": positions, "properties": texts}), jsonb=("properties",)
    )
    await conn.copy_to_table(
        "lake_properties",
        source=copy_source(payload),
        columns=["pos", "properties"],
        format="binary",
    )
    out = await copy_to_arrow(conn, _LAKE_PROPERTIES_SQL, columns={"properties": pa.string()})
    if out.num_rows != n:  # another call in this transaction: positions would be ambiguous
        raise RuntimeError(f"lake_properties: {out.num_rows} texts back for {n}")
    return out.column(0).combine_chunks()


async def _with_lake_properties(
    conn: asyncpg.Connection, table: pa.Table, mask: pa.Array
) -> pa.Table:
    """``table`` with the properties of the rows under ``mask`` replaced by their lake text
    (the other rows go to ``events``, whose jsonb column normalises them anyway)."""
    index = table.schema.get_field_index("properties")
    column = table.column(index).combine_chunks()
    mask = mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask
    normalised = await lake_properties(conn, column.filter(mask))
    replaced = pc.replace_with_mask(column, mask, normalised.cast(column.type))
    return table.set_column(index, table.schema.field(index), replaced)


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
