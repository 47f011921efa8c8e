"""Runs the analytics: load the sources from PostgreSQL, evaluate in DuckDB, shape answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from typing import Any, TypeVar

import asyncpg
import duckdb
import pyarrow as pa

from analytics import queries
from analytics.answers import (
    ActiveUsers,
    Cohort,
    Cohorts,
    Dau,
    DauBreakdown,
    DayActive,
    DayUsers,
    EventCount,
    Funnel,
    FunnelStep,
    Retention,
    RetentionWindow,
    Series,
    TopEvents,
)
from analytics.funnel import from_keys, walk
from analytics.hot_mirror import HotMirror
from analytics.limits import (
    Deadline,
    Gate,
    InvalidQueryValue,
    QueryTimeout,
    QueryTooLarge,
    RecoveryConflict,
    StoreUnavailable,
    retried_on_recovery_conflict,
)
from analytics.params import (
    ActiveUsersParams,
    Breakdown,
    CohortsParams,
    DateRange,
    FunnelParams,
    RetentionParams,
    Segment,
    segments_of,
)
from analytics.sources import Sources, load_catalog, load_day_summaries, load_rows, load_sources
from analytics.user_sets import (
    NotIndexed,
    UserSets,
    count_days,
    day_users,
    day_values,
    dimension,
    rolling,
    top_values,
)
from analytics.user_sets import retention as retention_from_sets
from storage.days import day_start, days_between
from storage.errors import DB_ERRORS
from storage.lake import Lake, LakeUnreadable, check_footer

T = TypeVar("T")


class Analytics:
    """One in-memory DuckDB per process; every query gets its own cursor (thread-safe).

    The database is opened on first use, in the process that uses it: gunicorn builds the
    app in its master and forks (``preload_app``), and a DuckDB instance does not survive a
    fork (its threads stay behind; closing the copy in a child crashed the process).

    Every query enters the gate (``EVENTS_QUERY_CONCURRENCY``) and runs against a deadline
    (``EVENTS_QUERY_TIMEOUT``): PostgreSQL's part under ``statement_timeout``, DuckDB's part
    interrupted when the deadline passes. DuckDB may use ``memory_bytes`` and no disk (no
    temporary directory: a query that does not fit fails rather than filling a disk), and
    reach only the lake's directory.
    """

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        lake: Lake,
        *,
        threads: int,
        memory_bytes: int = 1 << 30,
        timeout: float = 10.0,
        concurrency: int = 2,
        mirror_rows: int = 0,
        index_users: int = 0,
    ) -> None:
        self._pool = pool
        self._mirror = HotMirror(max_rows=mirror_rows)
        self._sets = UserSets(lambda: self._duck, max_users=index_users)
        self._lake = lake
        self._threads = threads
        self._memory_bytes = memory_bytes
        self._timeout = timeout
        self._gate = Gate(concurrency)
        self._duck_db: duckdb.DuckDBPyConnection | None = None
        self._owner = 0  # pid that opened it
        self._opening = threading.Lock()

    @property
    def _duck(self) -> duckdb.DuckDBPyConnection:
        pid = os.getpid()
        if self._duck_db is None or self._owner != pid:
            with self._opening:
                if self._duck_db is None or self._owner != pid:
                    self._duck_db = self._connect()
                    self._owner = pid
        return self._duck_db

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(
            ":memory:",
            config={
                "threads": self._threads,
                "memory_limit": f"{self._memory_bytes}B",
                "temp_directory": "",
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            },
        )
        # Our SQL only ever reads lake files; nothing else is reachable (defence in depth).
        root = os.path.abspath(self._lake.root) + os.sep
        con.execute("SET allowed_directories = $1", [[root]])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con

    @contextlib.contextmanager
    def _admitted(self) -> Iterator[Deadline]:
        """A place among the running queries, and this query's deadline; the drivers'
        errors come out as the domain's."""
        with self._gate.enter(), driver_errors():
            yield Deadline.after(self._timeout)

    def _fetch(
        self,
        cursor: duckdb.DuckDBPyConnection,
        statement: queries.Statement,
        tables: dict[str, pa.Table],
    ) -> list[tuple[Any, ...]]:
        try:
            for name, table in tables.items():
                cursor.register(name, table)
            return cursor.execute(statement.sql, statement.params).fetchall()
        except duckdb.InterruptException as ex:
            raise QueryTimeout("the query was stopped at its deadline") from ex
        except duckdb.OutOfMemoryException as ex:
            raise QueryTooLarge(str(ex).split("\n", 1)[0][:200]) from ex
        except duckdb.Error as ex:
            found = unreadable_file(ex, statement.files)
            if found is not None:
                raise found from ex
            raise

    async def _run_with(
        self, statement: queries.Statement, tables: dict[str, pa.Table], deadline: Deadline
    ) -> list[tuple[Any, ...]]:
        """Run ``statement`` in a thread (PERF: DuckDB releases the GIL, the event loop keeps
        serving), interrupted once ``deadline`` passes or the request goes away."""
        cursor = self._duck.cursor()
        work = asyncio.get_running_loop().run_in_executor(
            None, self._fetch, cursor, statement, tables
        )
        work.add_done_callback(lambda _: cursor.close())
        try:
            return await asyncio.wait_for(asyncio.shield(work), deadline.remaining())
        except TimeoutError:
            cursor.interrupt()
            with contextlib.suppress(QueryTimeout):
                return await work  # it finished just before the interrupt
            raise QueryTimeout("the query did not finish in time") from None
        except asyncio.CancelledError:
            cursor.interrupt()  # the client left: stop the work too
            raise

    async def _query(
        self, statement: queries.Statement, sources: Sources, deadline: Deadline
    ) -> list[tuple[Any, ...]]:
        tables = {
            name: getattr(sources, name)
            for name in ("hot_users", "hot_counts", "hot_events", "hot_rows")
        }
        present = {k: v for k, v in tables.items() if v is not None}
        return await self._run_with(statement, present, deadline)

    async def _sources(
        self,
        first: date,
        end: date,
        segments: tuple[Segment, ...],
        deadline: Deadline,
        *,
        users: bool = False,
        counts: bool = False,
    ) -> Sources:
        """Unsegmented: the rollups. Segmented: the mirror's hot rows when it is on, else
        what PostgreSQL selects for the segments."""
        if segments and self._mirror.enabled:
            return await load_rows(
                self._pool(),
                self._lake,
                first,
                end,
                segments,
                deadline=deadline,
                mirror=self._mirror,
            )
        return await load_sources(
            self._pool(),
            self._lake,
            first,
            end,
            segments,
            deadline=deadline,
            users=users,
            counts=counts,
        )

    async def _from_sets(
        self,
        first: date,
        end: date,
        dims: list[str],
        deadline: Deadline,
        compute: Callable[[dict[date, list[Any]]], T],
        *,
        types: tuple[str, ...] = (),
    ) -> T | None:
        """``compute`` over the user sets of days ``first <= day < end``, or None when the
        sets cannot answer (the mirror or the index is off, a dimension has too many values):
        the caller then counts from rows."""
        if not self._mirror.enabled or self._sets.off:
            return None
        catalog = await load_catalog(
            self._pool(), self._lake, first, end, deadline=deadline, mirror=self._mirror
        )
        hot = catalog.hot
        if hot is None:
            return None
        chunks = [c for c in hot.chunks if first <= c.day < end]

        def work() -> T:
            return compute(
                self._sets.sources(catalog.files, chunks, dims, live=hot.chunks, types=types)
            )

        try:
            return await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(None, work), deadline.remaining()
            )
        except (NotIndexed, ValueError):
            return None
        except TimeoutError:
            raise QueryTimeout("the query did not finish in time") from None

    @retried_on_recovery_conflict
    async def dau(self, days: DateRange, segments: tuple[Segment, ...]) -> Dau:
        with self._admitted() as deadline:
            found = None
            if len(segments) == 1:
                seg = segments[0]
                found = await self._from_sets(
                    days.first,
                    _after(days.last),
                    [dimension(seg)],
                    deadline,
                    lambda by_day: count_days(day_users(by_day, seg), days.first, days.last),
                )
            if found is not None:
                counts = found
            elif segments:
                sources = await self._sources(
                    days.first, _after(days.last), segments, deadline, users=True
                )
                stmt = queries.daily_active_users(days, segments, sources)
                counts = {d: int(n) for d, n in await self._query(stmt, sources, deadline)}
            else:
                counts = await self._dau_from_summaries(days, deadline)
        return Dau(
            first=days.first,
            last=days.last,
            segments=segments_of(segments),
            dau=[DayUsers(d, counts.get(d, 0)) for d in days_between(days.first, days.last)],
        )

    async def _dau_from_summaries(self, days: DateRange, deadline: Deadline) -> dict[date, int]:
        """Unsegmented DAU. PERF: a day kept in one lake file is read off its footer, a hot
        day off the rollup; only days split between several sources are counted by DuckDB."""
        s = await load_day_summaries(
            self._pool(), self._lake, days.first, _after(days.last), deadline=deadline
        )
        counts = dict(s.hot_users)
        for day, files in s.files.items():
            stats = files[0][1]
            if day not in s.exact_days and stats is not None:
                counts[day] = stats.users
        if s.exact_days:
            paths = [path for day in s.exact_days for path, _ in s.files[day]]
            rows = await self._run_with(
                queries.exact_daily_users(paths), {"hot_pairs": s.hot_pairs}, deadline
            )
            counts.update({d: int(n) for d, n in rows})
        return counts

    @retried_on_recovery_conflict
    async def top_events(
        self, days: DateRange, limit: int, segments: tuple[Segment, ...]
    ) -> TopEvents:
        with self._admitted() as deadline:
            if segments:
                sources = await self._sources(
                    days.first, _after(days.last), segments, deadline, counts=True
                )
                stmt = queries.top_events(days, limit, segments, sources)
                top = [(t, int(n)) for t, n in await self._query(stmt, sources, deadline)]
            else:
                top = await self._top_from_summaries(days, limit, deadline)
        return TopEvents(
            first=days.first,
            last=days.last,
            limit=limit,
            segments=segments_of(segments),
            top_events=[EventCount(t, n) for t, n in top],
        )

    async def _top_from_summaries(
        self, days: DateRange, limit: int, deadline: Deadline
    ) -> list[tuple[str, int]]:
        """Unsegmented top events: counts per type add up, so footers + rollup suffice."""
        s = await load_day_summaries(
            self._pool(), self._lake, days.first, _after(days.last), deadline=deadline
        )
        totals = Counter(s.hot_counts)
        unsummarised = []
        for files in s.files.values():
            for path, stats in files:
                if stats is None:
                    unsummarised.append(path)
                else:
                    totals.update(stats.event_types)
        if unsummarised:
            rows = await self._run_with(queries.counts_per_type(unsummarised), {}, deadline)
            totals.update({t: int(n) for t, n in rows})
        return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    async def _cohort_table(
        self,
        starts: list[date],
        p: RetentionParams | CohortsParams,
        end: date,
        deadline: Deadline,
    ) -> list[tuple[int, list[int]]] | None:
        """(cohort size, active users per window) of each start, from the user sets when
        they can answer (no segment or one)."""
        if len(p.segments) > 1:
            return None
        seg = p.segments[0] if p.segments else None
        g = 7 if p.granularity == "week" else 1
        return await self._from_sets(
            date.min,
            end,
            [dimension(seg)] if seg is not None else [],
            deadline,
            lambda by_day: retention_from_sets(day_users(by_day, seg), starts, g, p.windows),
        )

    async def _cohort_table_sql(
        self, p: CohortsParams, deadline: Deadline
    ) -> list[tuple[int, list[int]]]:
        """What ``_cohort_table`` gives, counted by DuckDB from rows (any segments)."""
        sources = await self._sources(date.min, p.end, p.segments, deadline, users=True)
        rows = await self._query(queries.cohorts(p, sources), sources, deadline)
        found = {(int(c), int(w)): int(n) for c, w, n in rows}
        return [
            (found.get((c, -1), 0), [found.get((c, w), 0) for w in range(p.windows)])
            for c in range(len(p.starts))
        ]

    @retried_on_recovery_conflict
    async def retention(self, p: RetentionParams) -> Retention:
        with self._admitted() as deadline:
            table = await self._cohort_table([p.start], p, p.end, deadline)
            if table is None:
                one = CohortsParams(
                    DateRange(p.start, p.start), p.windows, p.granularity, p.segments
                )
                table = await self._cohort_table_sql(one, deadline)
        size, active = table[0]
        return Retention(
            start_date=p.start,
            granularity=p.granularity,
            windows=p.windows,
            segments=segments_of(p.segments),
            cohort_size=size,
            retention=_windows(p, size, active),
        )

    @retried_on_recovery_conflict
    async def funnel(self, p: FunnelParams) -> Funnel:
        window_us = p.window_seconds * 1_000_000
        # Keys' times: microseconds from the range's first midnight, in as many bits as it spans.
        origin = int(day_start(p.days.first).timestamp()) * 1_000_000
        t_bits = (p.days.days * 86_400_000_000).bit_length()
        with self._admitted() as deadline:
            found = None
            if not p.segments:
                found = await self._from_sets(
                    p.days.first,
                    _after(p.days.last),
                    [],
                    deadline,
                    lambda by_day: from_keys(
                        {
                            kind: self._sets.funnel_keys(
                                [s for ss in by_day.values() for s in ss], kind, origin, t_bits
                            )
                            for kind in dict.fromkeys(p.steps)
                        },
                        t_bits,
                        p.steps,
                        window_us,
                    ),
                    types=tuple(dict.fromkeys(p.steps)),
                )
            if found is not None:
                return self._funnel_answer(p, found)
            sources = await load_rows(
                self._pool(),
                self._lake,
                p.days.first,
                _after(p.days.last),
                p.segments,
                deadline=deadline,
                types=tuple(dict.fromkeys(p.steps)),
                mirror=self._mirror,
            )
            rows = await self._query(queries.funnel(p, sources), sources, deadline)
        users = [0] * len(p.steps)
        for level, n, *_ in rows:
            if level >= 0:
                users[level] += int(n)
        tied = [(u, int(t), e) for level, _, u, t, e in rows if level < 0]
        for i, n in enumerate(walk(tied, p.steps, window_us)):
            users[i] += n
        return self._funnel_answer(p, users)

    @staticmethod
    def _funnel_answer(p: FunnelParams, users: list[int]) -> Funnel:
        return Funnel(
            first=p.days.first,
            last=p.days.last,
            window=p.window_seconds,
            segments=segments_of(p.segments),
            steps=[
                FunnelStep(
                    event_type=step,
                    users=n,
                    conversion=_rate(n, users[0]),
                    step_conversion=_rate(n, users[i - 1] if i else users[0]),
                )
                for i, (step, n) in enumerate(zip(p.steps, users, strict=True))
            ],
        )

    @retried_on_recovery_conflict
    async def active_users(self, p: ActiveUsersParams) -> ActiveUsers:
        with self._admitted() as deadline:
            found = None
            if len(p.segments) <= 1:
                seg = p.segments[0] if p.segments else None
                found = await self._from_sets(
                    p.lookback_first,
                    _after(p.days.last),
                    [dimension(seg)] if seg is not None else [],
                    deadline,
                    lambda by_day: rolling(
                        day_users(by_day, seg), p.days.first, p.days.last, p.window
                    ),
                )
            if found is None:
                sources = await self._sources(
                    p.lookback_first, _after(p.days.last), p.segments, deadline, users=True
                )
                rows = await self._query(queries.active_users(p, sources), sources, deadline)
                found = {d: int(n) for d, n in rows}
        counts = found
        return ActiveUsers(
            first=p.days.first,
            last=p.days.last,
            window=p.window,
            segments=segments_of(p.segments),
            active_users=[
                DayActive(d, counts.get(d, 0)) for d in days_between(p.days.first, p.days.last)
            ],
        )

    @retried_on_recovery_conflict
    async def cohorts(self, p: CohortsParams) -> Cohorts:
        starts = p.starts
        with self._admitted() as deadline:
            table = await self._cohort_table(starts, p, p.end, deadline)
            if table is None:
                table = await self._cohort_table_sql(p, deadline)
        return Cohorts(
            first=p.days.first,
            last=p.days.last,
            granularity=p.granularity,
            windows=p.windows,
            segments=segments_of(p.segments),
            cohorts=[
                Cohort(
                    start=start, cohort_size=size, retention=_windows(p.cohort(start), size, active)
                )
                for start, (size, active) in zip(starts, table, strict=True)
            ],
        )

    @retried_on_recovery_conflict
    async def dau_breakdown(
        self, days: DateRange, b: Breakdown, segments: tuple[Segment, ...]
    ) -> DauBreakdown:
        dim = b.describe()
        with self._admitted() as deadline:
            top = None
            if not segments:
                top = await self._from_sets(
                    days.first,
                    _after(days.last),
                    [dim],
                    deadline,
                    lambda by_day: top_values(
                        day_values(by_day, dim), days.first, days.last, b.limit
                    ),
                )
            if top is None:
                sources = await load_rows(
                    self._pool(),
                    self._lake,
                    days.first,
                    _after(days.last),
                    segments,
                    deadline=deadline,
                    properties=b.kind == "property",
                    mirror=self._mirror,
                )
                rows = await self._query(
                    queries.dau_breakdown(days, b, segments, sources), sources, deadline
                )
                values: dict[int, str] = {}
                per_day: dict[int, dict[date, int]] = {}
                for rank, value, day, n in rows:
                    values[int(rank)] = value
                    if day is not None:
                        per_day.setdefault(int(rank), {})[day] = int(n)
                top = [(values[r], per_day.get(r, {})) for r in sorted(values)]
        return DauBreakdown(
            first=days.first,
            last=days.last,
            segments=segments_of(segments),
            breakdown=b.describe(),
            limit=b.limit,
            series=[
                Series(
                    value=value,
                    dau=[
                        DayUsers(d, counts.get(d, 0)) for d in days_between(days.first, days.last)
                    ],
                )
                for value, counts in top
            ],
        )

    def close(self) -> None:
        if self._duck_db is not None and self._owner == os.getpid():
            self._duck_db.close()
        self._duck_db = None


# What a hot standby cancels a read with when the WAL it replays conflicts with it
# (serialization_failure for snapshots and buffer pins, deadlock_detected for a lock).
_RECOVERY_CONFLICTS = ("40001", "40P01")
# SQLSTATE classes of errors the request's own values cause (a segment value jsonb cannot
# hold, a number out of range): the client's to fix, not an outage.
_INPUT_CLASSES = ("22", "54")


@contextlib.contextmanager
def driver_errors() -> Iterator[None]:
    """PostgreSQL's and DuckDB's errors as the domain's, by SQLSTATE and class, never by
    message: the request's values at fault, the deadline passed, the store unavailable, a
    lake file unreadable. Anything else (a bug) goes on as it is."""
    try:
        yield
    except asyncpg.QueryCanceledError as ex:  # statement_timeout: the deadline passed
        raise QueryTimeout("PostgreSQL stopped the query at its deadline") from ex
    except asyncpg.PostgresError as ex:
        if ex.sqlstate in _RECOVERY_CONFLICTS:
            raise RecoveryConflict(f"the standby cancelled the read ({ex.sqlstate})") from ex
        if str(ex.sqlstate or "")[:2] in _INPUT_CLASSES:
            raise InvalidQueryValue(f"a parameter cannot be used: {ex}"[:300]) from ex
        raise StoreUnavailable(f"PostgreSQL cannot answer right now ({type(ex).__name__})") from ex
    except DB_ERRORS as ex:
        raise StoreUnavailable(f"PostgreSQL cannot answer right now ({type(ex).__name__})") from ex
    except (duckdb.ConversionException, duckdb.OutOfRangeException) as ex:
        raise InvalidQueryValue("a parameter cannot be used") from ex
    except duckdb.IOException as ex:  # an I/O error that no lake file explains
        raise LakeUnreadable("(not known)", str(ex).split("\n", 1)[0][:300]) from ex


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


def _windows(p: RetentionParams, size: int, active: list[int]) -> list[RetentionWindow]:
    return [
        RetentionWindow(window=w, start=p.window_start(w), active_users=n, rate=_rate(n, size))
        for w, n in enumerate(active)
    ]


def _rate(n: int, of: int) -> float:
    return round(n / of, 6) if of else 0.0


def _after(day: date) -> date:
    return date.fromordinal(day.toordinal() + 1)
