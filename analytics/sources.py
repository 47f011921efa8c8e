"""What a query reads: the lake files and the hot facts, taken from one PostgreSQL snapshot.

The compactor records a day's files and drops its hot rows in one transaction. A reader
that took the file list and the hot rows at different moments could count a day twice or
not at all; so both come from one REPEATABLE READ transaction that first takes an ACCESS
SHARE lock on ``events`` (the compactor's ACCESS EXCLUSIVE lock waits for it, and the
snapshot is taken only after the lock is held).

Hot facts are pulled as Arrow (``storage/arrow_copy.py``) and exactly what the query needs:

- no segment: the rollups, ``daily_users`` (day, user_id) and ``daily_event_counts``;
- only ``event_type`` segments: PostgreSQL computes the same facts from raw rows (equality
  on a text column means the same in both engines);
- property segments: raw rows that *may* match (``properties @> ...`` via the GIN index, a
  superset), with their properties; DuckDB then applies the exact test to hot and cold rows
  alike, so both sides use the same semantics.

Every listed lake file is checked to exist with its recorded size before anything reads it:
a missing, truncated or replaced file raises ``LakeUnreadable`` (503 ``lake_unreadable``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import pyarrow as pa

from analytics.limits import ConnectionLost, Deadline, QueryTimeout
from analytics.params import Segment
from storage.arrow_copy import TIMESTAMP_US, copy_to_arrow
from storage.days import day_start
from storage.errors import DB_ERRORS
from storage.lake import FileStats, Lake, check_size, read_stats

if TYPE_CHECKING:
    from analytics.hot_mirror import HotMirror, HotRows

USERS = {"day": pa.date32(), "user_id": pa.string()}
COUNTS = {"event_type": pa.string(), "events": pa.int64()}
EVENTS = {
    "day": pa.date32(),
    "user_id": pa.string(),
    "event_type": pa.string(),
    "properties": pa.string(),
}
ROWS = {
    "day": pa.date32(),
    "occurred_at": TIMESTAMP_US,
    "user_id": pa.string(),
    "event_type": pa.string(),
    "properties": pa.string(),
}


@dataclass(frozen=True, slots=True)
class Sources:
    """Lake files (absolute paths) and hot facts for a range of days."""

    files: tuple[str, ...]
    hot_users: pa.Table | None = None  # (day, user_id), distinct, exact
    hot_counts: pa.Table | None = None  # (event_type, events), exact
    hot_events: pa.Table | None = None  # (day, user_id, event_type, properties), a superset
    hot_rows: pa.Table | None = None  # (day, occurred_at, user_id, event_type, properties)


def property_document(path: tuple[str, ...], value: Any) -> str:
    """``{"a": {"b": value}}`` for path ``a.b``: the jsonb containment argument."""
    doc: Any = value
    for name in reversed(path):
        doc = {name: doc}
    return orjson.dumps(doc).decode()


def candidate_values(value: str) -> list[Any]:
    """JSON values a property may hold for DuckDB's text comparison to match ``value``:
    the string itself, and the number / boolean / object / array it spells, if any."""
    found: list[Any] = [value]
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return found
    if not isinstance(parsed, str) and parsed is not None:
        found.append(parsed)
    return found


async def _lake_files(
    conn: asyncpg.Connection, lake: Lake, first: date, end: date
) -> list[tuple[date, str]]:
    """``(day, absolute path)`` of the ``lake_files`` of days ``first <= day < end``, in path
    order, each checked to exist with its recorded size.

    Raises ``LakeUnreadable``. PERF: one ``stat`` per file, a few microseconds each, so a
    deleted, truncated or replaced file is a clear error before any reader opens it.
    """
    listed = await conn.fetch(
        "SELECT path, day, bytes FROM lake_files WHERE day >= $1 AND day < $2 ORDER BY path",
        first,
        end,
    )
    found = []
    for r in listed:
        path = str(lake.absolute(r["path"]))
        check_size(path, r["bytes"])
        found.append((r["day"], path))
    return found


class _Args:
    """Positional ``$n`` parameters for a SQL text built piece by piece."""

    def __init__(self, *initial: Any) -> None:
        self.values = list(initial)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _hot_filter(segments: tuple[Segment, ...], args: _Args, *, exact_types_only: bool) -> str:
    clauses = []
    for s in segments:
        if s.kind == "event_type":
            clauses.append(f"event_type = {args.add(s.value)}")
        elif not exact_types_only:
            docs = [
                f"properties @> {args.add(property_document(s.path, v))}::jsonb"
                for v in candidate_values(s.value)
            ]
            clauses.append("(" + " OR ".join(docs) + ")")
    return "".join(f" AND {c}" for c in clauses)


@contextlib.asynccontextmanager
async def snapshot(pool: asyncpg.Pool, deadline: Deadline) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside the read snapshot of a query (see the module's docstring).

    Bounded by the query's deadline: waiting for a connection of the analytics pool, and
    every statement (the lock included) through ``statement_timeout``, so the server stops
    the work too and the ACCESS SHARE lock that the compactor waits for is let go.
    """
    try:
        conn = await pool.acquire(timeout=deadline.remaining())
    except TimeoutError as ex:
        raise QueryTimeout("no analytics connection became free in time") from ex
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET LOCAL statement_timeout = {deadline.remaining_ms()}")
            await conn.execute("LOCK TABLE events IN ACCESS SHARE MODE")
            yield conn
    except DB_ERRORS as ex:
        if _closed(conn):
            raise ConnectionLost("the connection closed during the read") from ex
        raise
    finally:
        await pool.release(conn)


def _closed(conn: asyncpg.Connection) -> bool:
    """Whether the connection is gone (a pool's proxy whose connection died has been taken
    back by the pool, and says so by refusing the question)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


async def load_sources(
    pool: asyncpg.Pool,
    lake: Lake,
    first: date,
    end: date,
    segments: tuple[Segment, ...],
    *,
    deadline: Deadline,
    users: bool = False,
    counts: bool = False,
) -> Sources:
    """Lake files and hot facts for days ``first <= day < end`` (``date.min`` for all history)."""
    has_properties = any(s.kind == "property" for s in segments)
    async with snapshot(pool, deadline) as conn:
        files = tuple(path for _, path in await _lake_files(conn, lake, first, end))
        lo, hi = day_start(first) if first > date.min else None, day_start(end)
        if not segments:
            return Sources(
                files,
                hot_users=await copy_to_arrow(
                    conn,
                    "SELECT day, user_id FROM daily_users WHERE day >= $1 AND day < $2",
                    first,
                    end,
                    columns=USERS,
                )
                if users
                else None,
                hot_counts=await copy_to_arrow(
                    conn,
                    "SELECT event_type, sum(events)::bigint FROM daily_event_counts "
                    "WHERE day >= $1 AND day < $2 GROUP BY 1",
                    first,
                    end,
                    columns=COUNTS,
                )
                if counts
                else None,
            )
        args = _Args(hi)
        time_filter = "occurred_at < $1" + (f" AND occurred_at >= {args.add(lo)}" if lo else "")
        if not has_properties:
            where = time_filter + _hot_filter(segments, args, exact_types_only=True)
            return Sources(
                files,
                hot_users=await copy_to_arrow(
                    conn,
                    "SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date, user_id "
                    f"FROM events WHERE {where}",
                    *args.values,
                    columns=USERS,
                )
                if users
                else None,
                hot_counts=await copy_to_arrow(
                    conn,
                    f"SELECT event_type, count(*) FROM events WHERE {where} GROUP BY 1",
                    *args.values,
                    columns=COUNTS,
                )
                if counts
                else None,
            )
        where = time_filter + _hot_filter(segments, args, exact_types_only=False)
        hot_events = await copy_to_arrow(
            conn,
            "SELECT (occurred_at AT TIME ZONE 'UTC')::date, user_id, event_type, "
            f"properties::text FROM events WHERE {where}",
            *args.values,
            columns=EVENTS,
        )
        return Sources(files, hot_events=hot_events)


@dataclass(frozen=True, slots=True)
class DaySummaries:
    """What unsegmented DAU and top events need, mostly without reading any rows.

    - ``files``: lake files of the range by day, with the statistics in their footers;
    - ``hot_users`` / ``hot_counts``: per-day active users and per-type counts of hot rows,
      from the rollups;
    - ``exact_days``: days whose distinct users cannot be read off one footer (several files,
      a file without statistics, or rows both in the lake and hot), and ``hot_pairs``, the hot
      (day, user_id) rows of exactly those days, for DuckDB to count the union.
    """

    files: dict[date, list[tuple[str, FileStats | None]]]
    hot_users: dict[date, int]
    hot_counts: dict[str, int]
    exact_days: tuple[date, ...]
    hot_pairs: pa.Table


async def load_day_summaries(
    pool: asyncpg.Pool, lake: Lake, first: date, end: date, *, deadline: Deadline
) -> DaySummaries:
    """Day-level facts for ``first <= day < end``, from one snapshot (see ``load_sources``)."""
    async with snapshot(pool, deadline) as conn:
        files: dict[date, list[tuple[str, FileStats | None]]] = {}
        for day, path in await _lake_files(conn, lake, first, end):
            files.setdefault(day, []).append((path, read_stats(path)))
        hot_users = {
            r["day"]: int(r["users"])
            for r in await conn.fetch(
                "SELECT day, sum(users) AS users FROM daily_user_counts "
                "WHERE day >= $1 AND day < $2 GROUP BY day",
                first,
                end,
            )
            if r["users"]
        }
        hot_counts = {
            r["event_type"]: int(r["events"])
            for r in await conn.fetch(
                "SELECT event_type, sum(events) AS events FROM daily_event_counts "
                "WHERE day >= $1 AND day < $2 GROUP BY event_type",
                first,
                end,
            )
        }
        exact = tuple(
            sorted(
                day
                for day, day_files in files.items()
                if len(day_files) > 1 or day in hot_users or day_files[0][1] is None
            )
        )
        hot_pairs = (
            await copy_to_arrow(
                conn,
                "SELECT day, user_id FROM daily_users WHERE day = ANY($1::date[])",
                list(exact),
                columns=USERS,
            )
            if exact
            else pa.table({n: pa.array([], t) for n, t in USERS.items()})
        )
    return DaySummaries(files, hot_users, hot_counts, exact, hot_pairs)


async def load_rows(
    pool: asyncpg.Pool,
    lake: Lake,
    first: date,
    end: date,
    segments: tuple[Segment, ...],
    *,
    deadline: Deadline,
    types: tuple[str, ...] | None = None,
    properties: bool = False,
    mirror: HotMirror | None = None,
) -> Sources:
    """Lake files and hot rows (``hot_rows``: ``ROWS``, a superset of the counting events:
    DuckDB applies the exact segment test) for days ``first <= day < end``, of the event
    types ``types`` only if given; ``properties`` is NULL unless asked for (or needed by a
    property segment)."""
    properties = properties or any(s.kind == "property" for s in segments)
    async with _mirrored(mirror, deadline, pool), snapshot(pool, deadline) as conn:
        files = tuple(path for _, path in await _lake_files(conn, lake, first, end))
        view = await mirror.sync(conn) if mirror is not None else None
        if view is not None:
            return Sources(files, hot_rows=view.between(first, end))
        args = _Args(day_start(end))
        where = "occurred_at < $1"
        if first > date.min:
            where += f" AND occurred_at >= {args.add(day_start(first))}"
        if types is not None:
            where += f" AND event_type = ANY({args.add(list(types))}::text[])"
        where += _hot_filter(segments, args, exact_types_only=False)
        hot_rows = await copy_to_arrow(
            conn,
            "SELECT (occurred_at AT TIME ZONE 'UTC')::date, "
            "(extract(epoch FROM occurred_at) * 1000000)::bigint, user_id, event_type, "
            f"{'properties::text' if properties else 'NULL::text'} FROM events WHERE {where}",
            *args.values,
            columns=ROWS,
        )
    return Sources(files, hot_rows=hot_rows)


@contextlib.asynccontextmanager
async def _mirrored(
    mirror: HotMirror | None, deadline: Deadline, pool: asyncpg.Pool
) -> AsyncIterator[None]:
    """Hold the mirror's lock (if any) from before the snapshot is taken until it is synced:
    the snapshots the mirror follows then only move forward."""
    if mirror is None:
        yield
        return
    try:
        await asyncio.wait_for(mirror.lock.acquire(), deadline.remaining())
    except TimeoutError as ex:
        raise QueryTimeout("the hot rows were busy being brought up to date") from ex
    try:
        yield
    finally:
        mirror.lock.release()
        mirror.summarize_later(pool)


@dataclass(frozen=True, slots=True)
class Catalog:
    """Lake files by day and the mirror's hot rows, of one snapshot (``analytics/user_sets.py``
    indexes them); ``hot`` is None when the mirror is off."""

    files: dict[date, list[str]]
    hot: HotRows | None


async def load_catalog(
    pool: asyncpg.Pool, lake: Lake, first: date, end: date, *, deadline: Deadline, mirror: HotMirror
) -> Catalog:
    """Lake files of days ``first <= day < end`` (checked, by day) and the mirror's rows."""
    async with _mirrored(mirror, deadline, pool), snapshot(pool, deadline) as conn:
        files: dict[date, list[str]] = {}
        for day, path in await _lake_files(conn, lake, first, end):
            files.setdefault(day, []).append(path)
        return Catalog(files, await mirror.sync(conn))
