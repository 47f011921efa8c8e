"""The compactor: move every cold day (before the hot window) from PostgreSQL to the lake.

For each cold day, holding that day's advisory lock (two compactors, or a compactor and a
bulk import, never work on the same day at once):

1. Delete files of the day's directory that ``lake_files`` does not list: leftovers of an
   interrupted run (they were never published, so no reader ever used them).
2. In one REPEATABLE READ snapshot, read the day's rows (its partition, and any rows waiting
   in the default partition) in slices of at most ``EVENTS_COMPACT_FILE_ROWS`` and write each
   slice as a Parquet file: temporary name, fsync, rename, fsync the directory.
3. One transaction publishes the move: lock ``events``, check that the day still holds
   exactly the rows that were written (a late event may have arrived meanwhile: then undo
   the files and start the day again), record the files in ``lake_files`` (with their size
   and SHA-256), drop the day's partition, delete its default-partition rows and its rollup
   rows. Commit.

A crash before step 3 commits leaves the rows in PostgreSQL and unlisted files on disk, which
step 1 of the next run removes; a crash after it leaves nothing to do. Readers take the file
list and the hot rows from one snapshot (``analytics/sources.py``), so an event is counted
exactly once at every moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

import asyncpg
import pyarrow as pa

from core import metrics
from core.retry import Backoff
from storage.arrow_copy import copy_to_arrow
from storage.days import Today, day_bounds, day_start, first_hot_day, utc_today
from storage.db import connect
from storage.lake import HOT_ROWS_COLUMNS, HOT_ROWS_SQL, Lake, LakeFile, to_lake_table
from storage.partitions import DAILY_PARTITIONS

log = logging.getLogger(__name__)

# Advisory lock namespace for "working on lake day N" (N = the day's ordinal).
LAKE_DAY_LOCK = 0x6C616B65  # "lake"

Fault = Callable[[str, date], None]


class DayChanged(Exception):
    """Rows arrived for the day while it was being written; start it again."""


@dataclass(slots=True)
class CompactionReport:
    days: list[date] = field(default_factory=list)
    rows: int = 0
    files: int = 0
    skipped: list[date] = field(default_factory=list)  # locked by another process
    failed: list[date] = field(default_factory=list)
    orphans_removed: int = 0


async def lock_lake_day(conn: asyncpg.Connection, day: date, *, wait: bool = False) -> bool:
    """Take the day's session-level advisory lock: waiting for it (``wait``), or trying
    once (False if someone holds it)."""
    if wait:
        await conn.execute("SELECT pg_advisory_lock($1, $2)", LAKE_DAY_LOCK, day.toordinal())
        return True
    return bool(
        await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LAKE_DAY_LOCK, day.toordinal())
    )


async def unlock_lake_day(conn: asyncpg.Connection, day: date) -> None:
    await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", LAKE_DAY_LOCK, day.toordinal())


async def remove_orphans(conn: asyncpg.Connection, lake: Lake, day: date) -> int:
    """Delete the day's files that ``lake_files`` does not list (call with the day's lock)."""
    listed = {
        r["path"] for r in await conn.fetch("SELECT path FROM lake_files WHERE day = $1", day)
    }
    removed = 0
    for path in lake.files_on_disk(day):
        if lake.relative(path) not in listed:
            lake.remove(path)
            removed += 1
    if removed:
        log.warning("removed unpublished lake files", extra={"day": str(day), "files": removed})
    return removed


async def record_files(conn: asyncpg.Connection, files: list[LakeFile]) -> None:
    await conn.executemany(
        "INSERT INTO lake_files (path, day, rows, bytes, sha256) VALUES ($1, $2, $3, $4, $5)",
        [(f.path, f.day, f.rows, f.bytes, f.sha256) for f in files],
    )


class Compactor:
    """Moves cold days to the lake; safe to kill at any point and to run several at once."""

    def __init__(
        self,
        database_url: str,
        lake: Lake,
        *,
        hot_days: int,
        file_rows: int = 2_000_000,
        today: Today = utc_today,
        fault: Fault | None = None,
        lock_timeout_ms: int = 100,
        lock_patience: float = 120.0,
    ) -> None:
        self._url = database_url
        self._lake = lake
        self._hot_days = hot_days
        self._file_rows = file_rows
        self._today = today
        self._fault = fault
        self._lock_timeout_ms = lock_timeout_ms
        self._lock_patience = lock_patience

    def _step(self, name: str, day: date) -> None:
        if self._fault is not None:
            self._fault(name, day)

    async def cold_days(self, conn: asyncpg.Connection) -> list[date]:
        """Days before the hot window that still have a partition or default-partition rows."""
        cutoff = first_hot_day(self._today(), self._hot_days)
        partitions = await conn.fetch(DAILY_PARTITIONS)
        waiting = await conn.fetch(
            "SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date AS day FROM events_default "
            "WHERE occurred_at < $1",
            day_start(cutoff),
        )
        days = {r["day"] for r in partitions if r["day"] < cutoff} | {r["day"] for r in waiting}
        return sorted(days)

    async def run_once(self) -> CompactionReport:
        """One run over every cold day; counted in ``compaction_failures_total{stage}`` (a
        failed day, a run that raised) and ``compaction_last_success_timestamp_seconds``."""
        try:
            report = await self._run_once()
        except Exception:
            metrics.COMPACTION_FAILURES.labels(stage="run").inc()
            raise
        if report.failed:
            metrics.COMPACTION_FAILURES.labels(stage="day").inc(len(report.failed))
        else:
            metrics.COMPACTION_LAST_SUCCESS.set(time.time())
        return report

    async def _run_once(self) -> CompactionReport:
        report = CompactionReport()
        conn = await connect(self._url)
        try:
            for day in await self.cold_days(conn):
                if not await lock_lake_day(conn, day):
                    report.skipped.append(day)
                    continue
                try:
                    report.orphans_removed += await remove_orphans(conn, self._lake, day)
                    if not await self._still_hot(conn, day):
                        continue  # another compactor moved it since the list was made
                    files = await self._compact_day(conn, day)
                except (
                    OSError,
                    ValueError,
                    pa.ArrowException,
                    asyncpg.PostgresError,
                    RuntimeError,
                ) as ex:
                    # One bad day must not hold back the others; it is tried again next run.
                    log.exception(
                        "could not compact a day", extra={"day": str(day), "error": str(ex)[:300]}
                    )
                    report.failed.append(day)
                    continue
                finally:
                    await unlock_lake_day(conn, day)
                report.days.append(day)
                report.files += len(files)
                report.rows += sum(f.rows for f in files)
            if report.days:
                # The rollups just lost whole days of rows: reclaim them now rather than let
                # readers step over dead index entries until autovacuum comes by.
                await conn.execute(
                    "VACUUM (ANALYZE) daily_users, daily_user_counts, daily_event_counts"
                )
        finally:
            await conn.close()
        metrics.COMPACTION_RUNS.inc()
        metrics.COMPACTION_DAYS.inc(len(report.days))
        metrics.COMPACTION_ROWS.inc(report.rows)
        return report

    @staticmethod
    async def _still_hot(conn: asyncpg.Connection, day: date) -> bool:
        """Whether the day still has a partition or rows in the default partition."""
        lo, hi = day_bounds(day)
        return bool(
            await conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL OR EXISTS (SELECT 1 FROM events_default "
                "WHERE occurred_at >= $2 AND occurred_at < $3)",
                f"events_p{day:%Y%m%d}",
                lo,
                hi,
            )
        )

    async def _compact_day(self, conn: asyncpg.Connection, day: date) -> list[LakeFile]:
        for attempt in range(10):
            files = await self._write_day(conn, day)
            self._step("written", day)
            try:
                await self._publish(conn, day, files)
            except DayChanged:
                # Raised inside the transaction, so it rolled back: the files are unlisted.
                log.info(
                    "late events arrived while compacting; starting the day again",
                    extra={"day": str(day), "attempt": attempt + 1},
                )
                for f in files:
                    self._lake.remove(self._lake.absolute(f.path))
                continue
            # Any other failure leaves the files alone: the commit may have reached the
            # server before the connection broke, and then they are published. If it did not,
            # they are unlisted leftovers that the next run removes under the day's lock.
            self._step("published", day)
            log.info(
                "compacted day",
                extra={"day": str(day), "rows": sum(f.rows for f in files), "files": len(files)},
            )
            return files
        raise RuntimeError(f"day {day} kept changing while being compacted")

    async def _slices(self, conn: asyncpg.Connection, day: date) -> list[tuple[datetime, datetime]]:
        """Time ranges covering the day, each holding at most ``file_rows`` rows (by hour)."""
        lo, hi = day_bounds(day)
        hours = await conn.fetch(
            "SELECT date_trunc('hour', occurred_at) AS hour, count(*) AS n FROM events "
            "WHERE occurred_at >= $1 AND occurred_at < $2 GROUP BY 1 ORDER BY 1",
            lo,
            hi,
        )
        slices: list[tuple[datetime, datetime]] = []
        start, rows = lo, 0
        for r in hours:
            if rows and rows + r["n"] > self._file_rows:
                slices.append((start, r["hour"]))
                start, rows = r["hour"], 0
            rows += r["n"]
        if rows:
            slices.append((start, hi))
        return slices

    async def _write_day(self, conn: asyncpg.Connection, day: date) -> list[LakeFile]:
        files: list[LakeFile] = []
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                for lo, hi in await self._slices(conn, day):
                    rows = await copy_to_arrow(
                        conn,
                        HOT_ROWS_SQL + " WHERE occurred_at >= $1 AND occurred_at < $2",
                        lo,
                        hi,
                        columns=HOT_ROWS_COLUMNS,
                    )
                    if rows.num_rows:
                        table = to_lake_table(rows)
                        files.append(await asyncio.to_thread(self._lake.write, day, table))
        except BaseException:
            for f in files:
                self._lake.remove(self._lake.absolute(f.path))
            raise
        return files

    async def _publish(self, conn: asyncpg.Connection, day: date, files: list[LakeFile]) -> None:
        """Publish the day's files and drop its hot rows, in one transaction.

        It needs ``events`` exclusively, and while it waits for that lock every writer queues
        behind it: an analytics snapshot holding ACCESS SHARE for seconds would stall ingest
        for as long. So each attempt waits at most ``lock_timeout_ms``, then lets go and tries
        again after a back-off (ingest flows meanwhile), for up to ``lock_patience`` seconds.
        """
        backoff = Backoff(base=0.1, maximum=2.0)
        deadline = time.monotonic() + self._lock_patience
        attempt = 0
        while True:
            try:
                await self._publish_locked(conn, day, files)
                return
            except asyncpg.LockNotAvailableError:
                if time.monotonic() >= deadline:
                    raise
                metrics.COMPACTION_LOCK_RETRIES.inc()
                await asyncio.sleep(backoff.delay(attempt))
                attempt += 1

    async def _publish_locked(
        self, conn: asyncpg.Connection, day: date, files: list[LakeFile]
    ) -> None:
        lo, hi = day_bounds(day)
        partition = f"events_p{day:%Y%m%d}"
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{int(self._lock_timeout_ms)}ms'")
            await conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            now_rows = await conn.fetchval(
                "SELECT count(*) FROM events WHERE occurred_at >= $1 AND occurred_at < $2", lo, hi
            )
            if now_rows != sum(f.rows for f in files):
                raise DayChanged
            await record_files(conn, files)
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", partition):
                await conn.execute(f'DROP TABLE "{partition}"')
            await conn.execute(
                "DELETE FROM events_default WHERE occurred_at >= $1 AND occurred_at < $2", lo, hi
            )
            await conn.execute("DELETE FROM daily_users WHERE day = $1", day)
            await conn.execute("DELETE FROM daily_user_counts WHERE day = $1", day)
            await conn.execute("DELETE FROM daily_event_counts WHERE day = $1", day)


async def run_every(compactor: Compactor, every: float, stop: asyncio.Event) -> None:
    """Run the compactor every ``every`` seconds until ``stop`` is set."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            report = await compactor.run_once()
            log.info(
                "compaction run",
                extra={
                    "days": len(report.days),
                    "rows": report.rows,
                    "files": report.files,
                    "skipped": [str(d) for d in report.skipped],
                },
            )
        except Exception:  # keep the long-running compactor alive; the next run retries
            log.exception("compaction run failed; retrying at the next interval")
        remaining = max(0.0, every - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=remaining)
