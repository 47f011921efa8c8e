"""PostgreSQL's hot rows kept column-wise in this process, brought up to each query's snapshot.

PERF: a segmented query over the hot days used to pull every matching hot row from
PostgreSQL through COPY (hundreds of milliseconds for a week of traffic) on every call. The
mirror pulls each row once: a query takes its snapshot, and the mirror fetches only the
rows that snapshot sees and the mirror's last one did not, then answers from Arrow tables
that DuckDB scans in place.

Exactness rests on three facts of the table contract:

- every row carries ``written_by``, the 64-bit id of the transaction that wrote it
  (migration 0005; NULL for rows older than that, visible to every snapshot since). The
  rows a newer snapshot S sees and the old one O did not are those with ``written_by >=
  xmin(O)`` not visible in O: committed after O was taken, or in progress then. A BRIN
  index finds them without reading the table (after a look that found rows, the mirror
  summarizes the index's new block ranges in the background, so the next look reads only
  the newest pages); an unchanged snapshot needs no look at all;
- rows leave ``events`` only with their day: the compactor deletes a day's hot rows in the
  transaction that records its lake files. So a day whose list of lake files changed is
  fetched again whole (usually nothing is left of it);
- rows moved between partitions (``events_ensure_partitions``) keep their ``written_by``.

Queries of one process take their snapshots under the mirror's lock, one after the other,
so the mirror only ever moves forward; each query gets an immutable ``HotRows`` view.

Bounded: past ``max_rows`` hot rows the mirror empties itself and stays off (queries read
PostgreSQL as before) until a later fill fits; checked again at most every ``retry_s``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import asyncpg
import pyarrow as pa
import pyarrow.compute as pc

from analytics.sources import ROWS
from storage.arrow_copy import copy_to_arrow
from storage.days import day_start

_SELECT = (
    "SELECT (occurred_at AT TIME ZONE 'UTC')::date, "
    "(extract(epoch FROM occurred_at) * 1000000)::bigint, user_id, event_type, "
    "properties::text FROM events"
)
log = logging.getLogger(__name__)
_MAX_CHUNKS = 32
_SUMMARIZE = """
SELECT sum(brin_summarize_new_values(i.indexrelid))
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_inherits h ON h.inhrelid = i.indrelid
WHERE h.inhparent = 'events'::regclass AND c.relname LIKE '%written_by%'
"""
_EMPTY = pa.table({n: pa.array([], t) for n, t in ROWS.items()})


@dataclass(frozen=True, slots=True, eq=False)
class Chunk:
    """Hot rows of one day that arrived together: immutable, numbered in this process
    (``analytics/user_sets.py`` indexes each once)."""

    id: int
    day: date
    table: pa.Table


@dataclass(frozen=True, slots=True)
class HotRows:
    """Every hot row visible in one snapshot (``ROWS`` columns, properties as JSON text)."""

    table: pa.Table
    chunks: tuple[Chunk, ...] = ()

    def between(self, first: date, end: date) -> pa.Table:
        """Rows of days ``first <= day < end``."""
        if self.table.num_rows == 0 or (first == date.min and end == date.max):
            return self.table
        day = self.table.column("day")
        return self.table.filter(
            pc.and_(pc.greater_equal(day, pa.scalar(first)), pc.less(day, pa.scalar(end)))
        )


@dataclass(slots=True)
class _State:
    snapshot: str  # pg_snapshot text
    xmin: int
    days: dict[date, list[Chunk]] = field(default_factory=dict)
    files: dict[date, tuple[str, ...]] = field(default_factory=dict)  # lake files of those days

    @property
    def rows(self) -> int:
        return sum(c.table.num_rows for chunks in self.days.values() for c in chunks)


def _by_day(table: pa.Table) -> dict[date, pa.Table]:
    if table.num_rows == 0:
        return {}
    out: dict[date, pa.Table] = {}
    days = table.column("day")
    for day in pc.unique(days).to_pylist():
        out[day] = table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
    return out


class HotMirror:
    def __init__(self, *, max_rows: int, retry_s: float = 60.0) -> None:
        self._max_rows = max_rows
        self._retry_s = retry_s
        self._state: _State | None = None
        self._off_until = 0.0
        self._numbers = itertools.count()
        self._new_rows = False  # the last look found rows: summarize before the next one
        self._summarizing: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    def summarize_later(self, pool: asyncpg.Pool) -> None:
        """After a look that found new rows: summarize the new block ranges of
        ``written_by``'s BRIN indexes in the background, so the next delta reads only the
        newest few pages instead of every page not yet summarized."""
        if not self._new_rows or self._summarizing is not None:
            return
        self._new_rows = False
        self._summarizing = asyncio.create_task(self._summarize(pool))
        self._summarizing.add_done_callback(lambda _: setattr(self, "_summarizing", None))

    @staticmethod
    async def _summarize(pool: asyncpg.Pool) -> None:
        """Its own short transaction: the ShareUpdateExclusive locks it takes on the
        partitions are let go at once, and it gives up after 50 ms rather than wait for a
        VACUUM or the compactor (the delta is still right, only slower)."""
        try:
            async with pool.acquire(timeout=5) as conn, conn.transaction():
                if await conn.fetchval("SELECT pg_is_in_recovery()"):
                    return  # a standby (ANALYTICS_DATABASE_URL): the primary's autovacuum does it
                await conn.execute("SET LOCAL lock_timeout = '50ms'")
                await conn.execute(_SUMMARIZE)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, OSError):
            log.info("could not summarize the written_by index this time", exc_info=True)

    @property
    def enabled(self) -> bool:
        return self._max_rows > 0 and time.monotonic() >= self._off_until

    async def sync(self, conn: asyncpg.Connection) -> HotRows | None:
        """The hot rows of ``conn``'s snapshot (call inside ``analytics.sources.snapshot``,
        holding ``lock`` since before the snapshot was taken), or None when the mirror is off.
        """
        if not self.enabled:
            return None
        row = await conn.fetchrow(
            "SELECT pg_current_snapshot()::text AS snap, "
            "pg_snapshot_xmin(pg_current_snapshot())::text AS xmin"
        )
        snap, xmin = row["snap"], int(row["xmin"])
        state = self._state
        if state is None:
            total = await conn.fetchval("SELECT count(*) FROM events")
            if total > self._max_rows:
                return self._off()
            state = _State(snap, xmin)
            self._new_rows = True
            state.days = {
                day: [self._chunk(day, rows)]
                for day, rows in _by_day(await copy_to_arrow(conn, _SELECT, columns=ROWS)).items()
            }
            state.files = await self._files(conn, list(state.days))
        elif snap != state.snapshot:
            # (The same snapshot sees the same rows: nothing was committed or begun since.)
            state = await self._advance(conn, state, snap, xmin)
            if state.rows > self._max_rows:
                return self._off()
        self._state = state
        chunks = tuple(c for _, day_chunks in sorted(state.days.items()) for c in day_chunks)
        tables = [c.table for c in chunks]
        return HotRows(pa.concat_tables(tables) if tables else _EMPTY, chunks)

    def _chunk(self, day: date, rows: pa.Table) -> Chunk:
        return Chunk(next(self._numbers), day, rows)

    async def _advance(self, conn: asyncpg.Connection, old: _State, snap: str, xmin: int) -> _State:
        new = _State(snap, xmin, dict(old.days), dict(old.files))
        # The BRIN index is the only good way in; with NULLs (rows older than migration 0005)
        # or fresh statistics the planner may think otherwise and read every hot row.
        await conn.execute("SET LOCAL enable_seqscan = off")
        delta = await copy_to_arrow(
            conn,
            f"{_SELECT} WHERE written_by >= $1 "
            "AND NOT pg_visible_in_snapshot(written_by::text::xid8, $2::text::pg_snapshot)",
            old.xmin,
            old.snapshot,
            columns=ROWS,
        )
        await conn.execute("SET LOCAL enable_seqscan = on")
        added = _by_day(delta)
        self._new_rows = self._new_rows or delta.num_rows > 0
        # Days the compactor has moved since: their lake files changed; fetch them whole.
        known = set(new.days) | set(added)
        files = await self._files(conn, sorted(known))
        moved = [d for d in known if files.get(d, ()) != old.files.get(d, ())]
        for day in moved:
            new.days.pop(day, None)
            added.pop(day, None)
        for day in moved:
            again = await copy_to_arrow(
                conn,
                f"{_SELECT} WHERE occurred_at >= $1 AND occurred_at < $2",
                day_start(day),
                day_start(day + timedelta(days=1)),
                columns=ROWS,
            )
            if again.num_rows:
                added[day] = again
        for day, rows in added.items():
            chunks = [*new.days.get(day, []), self._chunk(day, rows)]
            if len(chunks) > _MAX_CHUNKS:  # many small deltas: one chunk, indexed once more
                chunks = [self._chunk(day, pa.concat_tables([c.table for c in chunks]))]
            new.days[day] = chunks
        new.days = {d: chunks for d, chunks in new.days.items() if chunks}
        new.files = {d: files[d] for d in new.days if d in files}
        return new

    @staticmethod
    async def _files(conn: asyncpg.Connection, days: list[date]) -> dict[date, tuple[str, ...]]:
        if not days:
            return {}
        return {
            r["day"]: tuple(r["paths"])
            for r in await conn.fetch(
                "SELECT day, array_agg(path ORDER BY path) AS paths FROM lake_files "
                "WHERE day = ANY($1::date[]) GROUP BY day",
                days,
            )
        }

    def _off(self) -> HotRows | None:
        """Too many hot rows to keep: let them go, and read PostgreSQL for a while."""
        self._state = None
        self._off_until = time.monotonic() + self._retry_s
        return None
