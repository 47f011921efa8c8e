"""Runs the analytics: load the sources from PostgreSQL, evaluate in DuckDB, shape answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date
from typing import Any

import asyncpg
import duckdb

from analytics import queries
from analytics.params import DateRange, RetentionParams, Segment, segments_of
from analytics.sources import Sources, load_sources
from storage.lake import Lake


class Analytics:
    """One in-memory DuckDB per process; every query gets its own cursor (thread-safe)."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], lake: Lake, *, threads: int) -> None:
        self._pool = pool
        self._lake = lake
        self._duck = duckdb.connect(":memory:", config={"threads": threads})

    def _run(self, statement: queries.Statement, sources: Sources) -> list[tuple[Any, ...]]:
        cursor = self._duck.cursor()
        try:
            for name in ("hot_users", "hot_counts", "hot_events"):
                table = getattr(sources, name)
                if table is not None:
                    cursor.register(name, table)
            return cursor.execute(statement.sql, statement.params).fetchall()
        finally:
            cursor.close()

    async def _query(self, statement: queries.Statement, sources: Sources) -> list[tuple[Any, ...]]:
        # PERF: DuckDB releases the GIL while it works; the event loop keeps serving.
        return await asyncio.to_thread(self._run, statement, sources)

    async def dau(self, days: DateRange, segments: tuple[Segment, ...]) -> dict[str, Any]:
        sources = await load_sources(
            self._pool(), self._lake, days.first, _after(days.last), segments, users=True
        )
        rows = await self._query(queries.daily_active_users(days, segments, sources), sources)
        return {
            "from": days.first.isoformat(),
            "to": days.last.isoformat(),
            "segments": segments_of(segments),
            "dau": [{"date": d.isoformat(), "unique_users": int(n)} for d, n in rows],
        }

    async def top_events(
        self, days: DateRange, limit: int, segments: tuple[Segment, ...]
    ) -> dict[str, Any]:
        sources = await load_sources(
            self._pool(), self._lake, days.first, _after(days.last), segments, counts=True
        )
        rows = await self._query(queries.top_events(days, limit, segments, sources), sources)
        return {
            "from": days.first.isoformat(),
            "to": days.last.isoformat(),
            "limit": limit,
            "segments": segments_of(segments),
            "top_events": [{"event_type": t, "count": int(n)} for t, n in rows],
        }

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
        self._duck.close()


def _after(day: date) -> date:
    return date.fromordinal(day.toordinal() + 1)
