"""Migrations, partitions and the indexes behind the analytics access paths."""

from __future__ import annotations

from datetime import date

import asyncpg
import pytest

from pipeline.steps.write import stage_messages as stage
from storage.migrate import MigrationError, available_migrations, migrate
from storage.partitions import index_closed_partitions, upkeep
from storage.writer import EventWriter, create_writer_pool
from tests import sample
from tests.storage.test_writer import batch

SAMPLE_END = date(2025, 8, 31)  # the day after the sample's last event


async def test_migrations_are_recorded_and_idempotent(
    database_url: str, db: asyncpg.Connection
) -> None:
    versions = [m.version for m in available_migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    assert await migrate(database_url) == []  # already applied by the session fixture
    recorded = await db.fetch("SELECT version, checksum FROM schema_migrations ORDER BY 1")
    assert [r["version"] for r in recorded] == versions
    assert [r["checksum"] for r in recorded] == [m.checksum for m in available_migrations()]


async def test_an_edited_migration_is_refused(database_url: str, db: asyncpg.Connection) -> None:
    await db.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    try:
        with pytest.raises(MigrationError):
            await migrate(database_url)
    finally:
        await db.execute(
            "UPDATE schema_migrations SET checksum = $1 WHERE version = 1",
            available_migrations()[0].checksum,
        )


async def test_upcoming_partitions_exist(database_url: str, db: asyncpg.Connection) -> None:
    await migrate(database_url, partitions_ahead_days=2, today=date(2031, 5, 30))
    names = {
        r["relname"]
        for r in await db.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass"
        )
    }
    assert {
        "events_p20310529",
        "events_p20310530",
        "events_p20310531",
        "events_p20310601",
        "events_default",
    } <= names
    bounds = await db.fetchval(
        "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'events_p20310601'"
    )
    assert bounds == ("FOR VALUES FROM ('2031-06-01 00:00:00+00') TO ('2031-06-02 00:00:00+00')")


ACCESS_PATHS = {
    # daily unique users over a range (hot rollup)
    "dau": (
        "SELECT day, count(*) FROM daily_users "
        "WHERE day BETWEEN '2025-08-10' AND '2025-08-16' GROUP BY day",
        "daily_users_pkey",
    ),
    # raw hot rows of one event type over a range (event_type segments), days that are over
    "event_type": (
        "SELECT count(*) FROM events WHERE event_type = 'purchase' "
        "AND occurred_at >= '2025-08-01' AND occurred_at < '2025-08-31'",
        "_type_time_idx",
    ),
    # raw hot rows with a property (property segments), days that are over
    "property": (
        'SELECT count(*) FROM events WHERE properties @> \'{"country": "UA"}\' '
        "AND occurred_at >= '2025-08-01' AND occurred_at < '2025-08-31'",
        "_properties_idx",
    ),
}


@pytest.mark.parametrize("path", sorted(ACCESS_PATHS))
async def test_the_planner_uses_the_indexes(
    path: str, database_url: str, db: asyncpg.Connection
) -> None:
    pool = await create_writer_pool(database_url, size=1)
    try:
        # The sample's month is hot for this writer: every day gets its partition.
        writer = EventWriter(pool, notify_channel="x", hot_days=40, today=lambda: SAMPLE_END)
        await writer.write(stage([batch(sample.events())]))
    finally:
        await pool.close()
    # Raw-row indexes are built per partition once its day is over (all of them here).
    await index_closed_partitions(db)
    unindexed = await db.fetchval(
        "SELECT count(*) FROM pg_class c WHERE c.relname ~ '^events_p2025(07|08)[0-9]{2}$' "
        "AND (to_regclass(c.relname || '_properties_idx') IS NULL "
        "OR to_regclass(c.relname || '_type_time_idx') IS NULL)"
    )
    assert unindexed == 0
    await db.execute("VACUUM ANALYZE events")
    await db.execute("VACUUM ANALYZE daily_users")
    query, index = ACCESS_PATHS[path]
    async with db.transaction():
        # The sample is small enough that a sequential scan would win on cost; this asks
        # which index serves the access path when the planner has to use one.
        await db.execute("SET LOCAL enable_seqscan = off")
        if index != "_properties_idx":  # GIN indexes are only read by bitmap scans
            await db.execute("SET LOCAL enable_bitmapscan = off")
        plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + query))
    # Per-partition indexes are named <partition><suffix>, daily_users' is its own.
    assert index in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_upkeep_indexes_closed_days_once_and_only_them(
    database_url: str, db: asyncpg.Connection
) -> None:
    await migrate(database_url, partitions_ahead_days=1, today=date(2031, 3, 10))
    assert await upkeep(db, ahead_days=1, today=date(2031, 3, 10))
    indexed = {
        r["relname"]
        for r in await db.fetch(
            "SELECT relname FROM pg_class WHERE relname LIKE 'events_p2031%_idx' "
            "AND relname NOT LIKE '%written_by%'"
        )
    }
    # The BRIN index of written_by (migration 0005) is every partition's from the start.
    partitions = await db.fetch(
        "SELECT relname, to_regclass(relname || '_written_by_idx') IS NOT NULL AS brin "
        "FROM pg_class WHERE relname ~ '^events_p2031[0-9]{4}$'"
    )
    assert len(partitions) >= 3 and all(r["brin"] for r in partitions)
    # Yesterday's partition only; today's and tomorrow's are still being written.
    assert indexed == {"events_p20310309_properties_idx", "events_p20310309_type_time_idx"}
    assert await index_closed_partitions(db, date(2031, 3, 10)) == 0  # nothing left to do
    valid = await db.fetch(
        "SELECT indisvalid FROM pg_index WHERE indexrelid IN "
        "('events_p20310309_properties_idx'::regclass, 'events_p20310309_type_time_idx'::regclass)"
    )
    assert [r["indisvalid"] for r in valid] == [True, True]
