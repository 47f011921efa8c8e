"""Analytics cannot starve ingest: a deadline, a cap on running queries, a memory limit, a pool
of its own, and a compactor that does not queue writers behind a long snapshot.

Slow queries are made real rather than simulated: an ACCESS EXCLUSIVE lock held on
``events`` by another connection makes the snapshot's ACCESS SHARE lock wait (PostgreSQL's
``statement_timeout`` then stops it), and DuckDB gets statements that really run long or
really need more memory than allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from falcon import testing

from analytics.engine import Analytics, driver_errors
from analytics.limits import (
    Deadline,
    InvalidQueryValue,
    QueryTimeout,
    QueryTooLarge,
    StoreUnavailable,
)
from analytics.queries import Statement
from core import metrics
from core.config import Settings
from service.app import create_app
from service.errors import ANSWERS
from storage.compactor import Compactor
from storage.lake import Lake
from tests.analytics.conftest import SAMPLE_TODAY
from tests.conftest import API_KEY

DAU = "/stats/dau?from=2025-08-01&to=2025-08-07"


@contextlib.asynccontextmanager
async def events_locked(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """``events`` held in ACCESS EXCLUSIVE mode by another session until the block ends."""
    conn = await asyncpg.connect(database_url)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    try:
        yield conn
    finally:
        await tx.rollback()
        await conn.close()


async def test_a_slow_query_times_out_and_the_next_one_is_refused_meanwhile(
    settings: Settings, db: asyncpg.Connection
) -> None:
    bounded = settings.with_overrides(query_timeout=1.5, query_concurrency=1)
    app = create_app(bounded)
    async with testing.ASGIConductor(app, headers={"X-API-Key": API_KEY}) as c:
        async with events_locked(settings.database_url):
            slow = asyncio.create_task(c.simulate_get(DAU))
            await asyncio.sleep(0.3)  # the first query is waiting for its lock now
            second = await c.simulate_get(DAU)
            ready = await c.simulate_get("/readyz")
            first = await slow
        after = await c.simulate_get(DAU)
    assert second.status_code == 503
    assert second.json["error"]["code"] == "too_many_queries"
    assert second.headers["retry-after"] == "1"
    assert first.status_code == 503
    assert first.json["error"]["code"] == "query_timeout"
    assert int(first.headers["retry-after"]) > 0
    # Readiness has a pool of its own and was never held up by the stuck query.
    assert ready.status_code == 200
    assert after.status_code == 200
    # The server stopped the statement too: no query of the app is left waiting.
    waiting = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND query LIKE 'LOCK TABLE events IN ACCESS SHARE%' AND state = 'active'"
    )
    assert waiting == 0


async def test_waiting_for_an_analytics_connection_ends_at_the_deadline(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """One analytics connection, two queries allowed: the second waits for the connection
    the first holds and gives up at its deadline; ingest's pool is not involved."""
    bounded = settings.with_overrides(query_timeout=1.0, query_concurrency=2, analytics_pool_size=1)
    app = create_app(bounded)
    async with (
        testing.ASGIConductor(app, headers={"X-API-Key": API_KEY}) as c,
        events_locked(settings.database_url),
    ):
        answers = await asyncio.gather(c.simulate_get(DAU), c.simulate_get(DAU))
        ready = await c.simulate_get("/readyz")
    assert sorted(a.json["error"]["code"] for a in answers) == ["query_timeout"] * 2
    assert ready.status_code == 200


def _analytics(tmp_path: Path, **limits: float) -> Analytics:
    lake = Lake(tmp_path / "lake")
    lake.root.mkdir(parents=True)
    return Analytics(lambda: None, lake, threads=2, **limits)  # type: ignore[arg-type,return-value]


async def test_duckdb_is_interrupted_at_the_deadline(tmp_path: Path) -> None:
    analytics = _analytics(tmp_path, memory_bytes=256 << 20)
    endless = Statement("SELECT count(*) FROM range(1000000000000) a")
    try:
        with pytest.raises(QueryTimeout):
            await analytics._run_with(endless, {}, Deadline.after(0.3))
        # The interrupted cursor let the database go: the next statement runs at once.
        quick = Statement("SELECT 42")
        assert await analytics._run_with(quick, {}, Deadline.after(5)) == [(42,)]
    finally:
        analytics.close()


async def test_duckdb_stays_within_its_memory_and_never_spills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tmp").mkdir()  # DuckDB's default spill directory, ready to be used
    analytics = _analytics(tmp_path, memory_bytes=64 << 20)
    greedy = Statement("SELECT count(DISTINCT i) FROM range(50000000) t(i)")
    try:
        with pytest.raises(QueryTooLarge):
            await analytics._run_with(greedy, {}, Deadline.after(30))
        memory = await analytics._run_with(
            Statement("SELECT current_setting('memory_limit')"), {}, Deadline.after(5)
        )
    finally:
        analytics.close()
    assert memory[0][0].startswith("61.0 MiB") or memory[0][0].startswith("64.0 MiB")
    assert list((tmp_path / ".tmp").iterdir()) == []


async def test_duckdb_reaches_no_file_outside_the_lake(tmp_path: Path) -> None:
    analytics = _analytics(tmp_path)
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    try:
        with pytest.raises(Exception, match=r"Permission|disabled"):
            await analytics._run_with(
                Statement(f"SELECT * FROM read_csv('{outside}')"), {}, Deadline.after(5)
            )
    finally:
        analytics.close()


async def test_errors_the_request_causes_in_postgresql_are_400(db: asyncpg.Connection) -> None:
    with pytest.raises(InvalidQueryValue) as caught, driver_errors():
        await db.fetchval("SELECT '1e400'::float4")  # 22003 numeric_value_out_of_range
    answer = ANSWERS[InvalidQueryValue](caught.value)
    assert (answer.status, answer.code) == (400, "invalid_parameter")
    with pytest.raises(StoreUnavailable) as outage, driver_errors():
        await db.fetchval("SELECT pg_terminate_backend(pg_backend_pid())")
    answer = ANSWERS[StoreUnavailable](outage.value)
    assert (answer.status, answer.code) == (503, "database_unavailable")
    assert answer.headers["Retry-After"] == "1"


async def test_the_compactor_does_not_queue_ingest_behind_a_long_snapshot(
    store: tuple[Settings, Lake], db: asyncpg.Connection
) -> None:
    """An analytics snapshot holds ACCESS SHARE on events for seconds. The compactor asks for
    ACCESS EXCLUSIVE; while it waits, PostgreSQL queues every later writer behind it. Each
    attempt gives up after 100 ms, so a writer gets through while the snapshot is still
    held, and the compactor finishes once the snapshot ends."""
    settings, lake = store
    before = metrics.COMPACTION_LOCK_RETRIES._value.get()
    reader = await asyncpg.connect(settings.database_url)
    snapshot = reader.transaction(isolation="repeatable_read", readonly=True)
    await snapshot.start()
    await reader.execute("LOCK TABLE events IN ACCESS SHARE MODE")
    compactor = Compactor(settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY)
    compaction = asyncio.create_task(compactor.run_once())
    writer = await asyncpg.connect(settings.database_url)
    try:
        await asyncio.sleep(1.0)  # the compactor is now retrying its lock
        assert not compaction.done()
        # A writer, while the snapshot is still held (it would wait for the snapshot if it
        # were queued behind the compactor's lock request).
        await writer.execute("SET lock_timeout = '3s'")
        await writer.execute(
            "INSERT INTO events (event_id, occurred_at, user_id, event_type, properties, "
            "received_at, batch_id) VALUES (gen_random_uuid(), now(), 'w', 'write', '{}', "
            "now(), gen_random_uuid())"
        )
        assert not compaction.done()
    finally:
        await snapshot.rollback()
        await reader.close()
        await writer.close()
    report = await asyncio.wait_for(compaction, 60)
    assert report.days and not report.failed
    assert metrics.COMPACTION_LOCK_RETRIES._value.get() > before
    assert await db.fetchval("SELECT count(*) FROM events WHERE user_id = 'w'") == 1
    assert os.path.isdir(lake.root)
