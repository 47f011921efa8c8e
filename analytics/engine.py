"""Runs the analytics: load the sources from PostgreSQL, evaluate in DuckDB, shape answers."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import asyncpg
import duckdb
import pyarrow as pa

from analytics import queries
from analytics.params import DateRange, RetentionParams, Segment, segments_of
from analytics.sources import Sources, load_day_summaries, load_sources
from storage.days import days_between
from storage.lake import Lake, LakeUnreadable, check_footer


class Analytics:
    """One in-memory DuckDB per process; every query gets its own cursor (thread-safe).

    The database is opened on first use, in the process that uses it: gunicorn builds the
    app in its master and forks (``preload_app``), and a DuckDB instance does not survive a
    fork (its threads stay behind; closing the copy in a child crashed the process).
    """

    def __init__(self, pool: Callable[[], asyncpg.Pool], lake: Lake, *, threads: int) -> None:
        self._pool = pool
        self._lake = lake
        self._threads = threads
        self._duck_db: duckdb.DuckDBPyConnection | None = None
        self._owner = 0  # pid that opened it
        self._opening = threading.Lock()

    @property
    def _duck(self) -> duckdb.DuckDBPyConnection:
        pid = os.getpid()
        if self._duck_db is None or self._owner != pid:
            with self._opening:
                if self._duck_db is None or self._owner != pid:
                    self._duck_db = duckdb.connect(":memory:", config={"threads": self._threads})
                    self._owner = pid
        return self._duck_db

    def _run(self, statement: queries.Statement, sources: Sources) -> list[tuple[Any, ...]]:
        tables = {
            name: getattr(sources, name) for name in ("hot_users", "hot_counts", "hot_events")
        }
        return self._run_with(statement, {k: v for k, v in tables.items() if v is not None})

    def _run_with(
        self, statement: queries.Statement, tables: dict[str, pa.Table]
    ) -> list[tuple[Any, ...]]:
        cursor = self._duck.cursor()
        try:
            for name, table in tables.items():
                cursor.register(name, table)
            return cursor.execute(statement.sql, statement.params).fetchall()
        except duckdb.Error as ex:
            found = unreadable_file(ex, statement.files)
            if found is not None:
                raise found from ex
            raise
        finally:
            cursor.close()

    async def _query(self, statement: queries.Statement, sources: Sources) -> list[tuple[Any, ...]]:
        # PERF: DuckDB releases the GIL while it works; the event loop keeps serving.
        return await asyncio.to_thread(self._run, statement, sources)

    async def dau(self, days: DateRange, segments: tuple[Segment, ...]) -> dict[str, Any]:
        if segments:
            sources = await load_sources(
                self._pool(), self._lake, days.first, _after(days.last), segments, users=True
            )
            stmt = queries.daily_active_users(days, segments, sources)
            counts = {d: int(n) for d, n in await self._query(stmt, sources)}
        else:
            counts = await self._dau_from_summaries(days)
        return {
            "from": days.first.isoformat(),
            "to": days.last.isoformat(),
            "segments": segments_of(segments),
            "dau": [
                {"date": d.isoformat(), "unique_users": counts.get(d, 0)}
                for d in days_between(days.first, days.last)
            ],
        }

    async def _dau_from_summaries(self, days: DateRange) -> dict[date, int]:
        """Unsegmented DAU. PERF: a day kept in one lake file is read off its footer, a hot
        day off the rollup; only days split between several sources are counted by DuckDB."""
        s = await load_day_summaries(self._pool(), self._lake, days.first, _after(days.last))
        counts = dict(s.hot_users)
        for day, files in s.files.items():
            stats = files[0][1]
            if day not in s.exact_days and stats is not None:
                counts[day] = stats.users
        if s.exact_days:
            paths = [path for day in s.exact_days for path, _ in s.files[day]]
            rows = await asyncio.to_thread(
                self._run_with, queries.exact_daily_users(paths), {"hot_pairs": s.hot_pairs}
            )
            counts.update({d: int(n) for d, n in rows})
        return counts

    async def top_events(
        self, days: DateRange, limit: int, segments: tuple[Segment, ...]
    ) -> dict[str, Any]:
        if segments:
            sources = await load_sources(
                self._pool(), self._lake, days.first, _after(days.last), segments, counts=True
            )
            stmt = queries.top_events(days, limit, segments, sources)
            top = [(t, int(n)) for t, n in await self._query(stmt, sources)]
        else:
            top = await self._top_from_summaries(days, limit)
        return {
            "from": days.first.isoformat(),
            "to": days.last.isoformat(),
            "limit": limit,
            "segments": segments_of(segments),
            "top_events": [{"event_type": t, "count": n} for t, n in top],
        }

    async def _top_from_summaries(self, days: DateRange, limit: int) -> list[tuple[str, int]]:
        """Unsegmented top events: counts per type add up, so footers + rollup suffice."""
        s = await load_day_summaries(self._pool(), self._lake, days.first, _after(days.last))
        totals = Counter(s.hot_counts)
        unsummarised = []
        for files in s.files.values():
            for path, stats in files:
                if stats is None:
                    unsummarised.append(path)
                else:
                    totals.update(stats.event_types)
        if unsummarised:
            rows = await asyncio.to_thread(
                self._run_with, queries.counts_per_type(unsummarised), {}
            )
            totals.update({t: int(n) for t, n in rows})
        return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    async def retention(self, p: RetentionParams) -> dict[str, Any]:
        sources = await load_sources(
            self._pool(), self._lake, date.min, p.end, p.segments, users=True
        )
        rows = await self._query(queries.retention(p, sources), sources)
        cohort = int(rows[0][1]) if rows else 0
        return {
            "start_date": p.start.isoformat(),
            "granularity": p.granularity,
            "windows": p.windows,
            "segments": segments_of(p.segments),
            "cohort_size": cohort,
            "retention": [
                {
                    "window": int(w),
                    "start": p.window_start(int(w)).isoformat(),
                    "active_users": int(active),
                    "rate": round(active / cohort, 6) if cohort else 0.0,
                }
                for w, _, active in rows
            ],
        }

    def close(self) -> None:
        if self._duck_db is not None and self._owner == os.getpid():
            self._duck_db.close()
        self._duck_db = None


def unreadable_file(error: duckdb.Error, files: Sequence[str]) -> LakeUnreadable | None:
    """The lake file behind a failed statement, if one is to blame.

    DuckDB names files in the first line of its message when it cannot open or read one
    (missing, truncated, not Parquet; a schema mismatch names the first file as well as the
    foreign one); a first file of another schema shows up as a binder error that names only
    a column. So the footers are checked, named files first; the first one that fails is the
    answer. All footers fine: a file DuckDB named alone (a damaged page), else nothing, and
    the error is not the lake's (a bug stays a 500).
    """
    first_line = str(error).split("\n", 1)[0]  # later lines quote the SQL, with every path
    named = [path for path in files if path in first_line]
    for path in [*named, *(f for f in files if f not in named)]:
        try:
            check_footer(path)
        except LakeUnreadable as found:
            return found
    if len(named) == 1:
        return LakeUnreadable(named[0], first_line[:300])
    return None


def _after(day: date) -> date:
    return date.fromordinal(day.toordinal() + 1)
