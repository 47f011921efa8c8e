"""The exactly-once writer against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from core.ids import uuid7
from ingest.validate import Limits, validate_records
from pipeline.message import BatchMeta, DecodedBatch
from pipeline.steps.write import stage_messages as stage
from storage.errors import BadData, StorageUnavailable, classify
from storage.writer import EventWriter, create_writer_pool
from tests.conftest import new_event

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def batch(events: list[dict[str, object]], *, key_id: str = "key_test") -> DecodedBatch:
    validated = validate_records(events, Limits(), NOW)
    assert validated.rejected == []
    meta = BatchMeta(batch_id=uuid7(), received_at=NOW, key_id=key_id, source="json")
    return DecodedBatch(table=validated.table, meta=meta)


@pytest.fixture
async def writer(database_url: str, db: asyncpg.Connection) -> AsyncIterator[EventWriter]:
    pool = await create_writer_pool(database_url, size=4)
    yield EventWriter(pool, notify_channel="test_committed")
    await pool.close()


async def test_stores_a_batch_and_records_it(writer: EventWriter, db: asyncpg.Connection) -> None:
    events = [new_event(user_id=f"u{i}", properties={"i": i}) for i in range(100)]
    b = batch(events)
    result = await writer.write(stage([b]))
    assert (result.inserted, result.duplicates) == (100, 0)
    rows = await db.fetch("SELECT event_id, user_id, properties, batch_id FROM events")
    assert len(rows) == 100
    assert {str(r["event_id"]) for r in rows} == {e["event_id"] for e in events}
    assert all(r["batch_id"] == b.meta.batch_id for r in rows)
    record = await db.fetchrow("SELECT * FROM ingest_batches WHERE batch_id = $1", b.meta.batch_id)
    assert (record["events"], record["inserted"], record["duplicates"], record["key_id"]) == (
        100,
        100,
        0,
        "key_test",
    )


async def test_same_batch_twice_and_in_batch_duplicates(
    writer: EventWriter, db: asyncpg.Connection
) -> None:
    first = new_event(properties={"version": 1})
    events = [first, new_event(), dict(first, properties={"version": 2})]
    b1 = batch(events)
    result = await writer.write(stage([b1]))
    assert (result.inserted, result.duplicates) == (2, 1)
    # First occurrence wins.
    props = await db.fetchval(
        "SELECT properties FROM events WHERE event_id = $1", uuid.UUID(first["event_id"])
    )
    assert props == '{"version": 1}'
    again = await writer.write(stage([batch(events)]))
    assert (again.inserted, again.duplicates) == (0, 3)
    assert await db.fetchval("SELECT count(*) FROM events") == 2


async def test_a_resend_with_another_occurred_at_is_not_stored_twice(
    writer: EventWriter, db: asyncpg.Connection
) -> None:
    event = new_event(occurred_at="2025-08-01T10:00:00Z")
    await writer.write(stage([batch([event])]))
    moved = dict(event, occurred_at="2025-09-15T10:00:00Z")  # another day, another partition
    result = await writer.write(stage([batch([moved])]))
    assert (result.inserted, result.duplicates) == (0, 1)
    assert await db.fetchval("SELECT count(*) FROM events") == 1
    assert await db.fetchval("SELECT occurred_at FROM events") == datetime(
        2025, 8, 1, 10, tzinfo=UTC
    )


async def test_counts_per_batch_in_a_micro_batch(
    writer: EventWriter, db: asyncpg.Connection
) -> None:
    shared = new_event()
    b1 = batch([shared, new_event()])
    b2 = batch([shared, new_event(), new_event()])
    result = await writer.write(stage([b1, b2]))
    by_batch = {o.batch_id: (o.inserted, o.duplicates) for o in result.batches}
    assert by_batch == {b1.meta.batch_id: (2, 0), b2.meta.batch_id: (2, 1)}
    recorded = {
        r["batch_id"]: (r["inserted"], r["duplicates"])
        for r in await db.fetch("SELECT * FROM ingest_batches")
    }
    assert recorded == by_batch


async def test_concurrent_writers_with_overlapping_ids_store_each_once(
    writer: EventWriter, db: asyncpg.Connection
) -> None:
    """Many writers at once, each batch overlapping others in random order: no deadlock,
    no duplicate, nothing lost."""
    pool_ids = [
        new_event(user_id=f"u{i % 50}", occurred_at=f"2025-08-{1 + i % 28:02d}T00:00:00Z")
        for i in range(3000)
    ]
    rng = random.Random(7)
    batches = []
    for _ in range(24):
        chosen = rng.sample(pool_ids, 600)
        batches.append(batch(chosen))
    results = await asyncio.gather(*(writer.write(stage([b])) for b in batches))
    distinct = {x for b in batches for x in b.table.column("event_id").to_pylist()}
    assert sum(r.inserted for r in results) == len(distinct)
    assert await db.fetchval("SELECT count(*) FROM events") == len(distinct)
    assert await db.fetchval("SELECT count(DISTINCT event_id) FROM events") == len(distinct)
    assert await db.fetchval("SELECT count(*) FROM event_ids") == len(distinct)


async def test_hot_days_get_partitions_on_demand_and_default_rows_move(
    writer: EventWriter, db: asyncpg.Connection, database_url: str
) -> None:
    # A row that reached the default partition (its day had no partition then) ...
    day = datetime(2024, 2, 29, tzinfo=UTC)
    stray = uuid.uuid4()
    await db.execute(
        "INSERT INTO events_default VALUES ($1, $2, 'u', 't', '{}', now(), $3)",
        stray,
        day + timedelta(hours=5),
        uuid.uuid4(),
    )
    # ... is moved into the day's partition when that day is hot and its partition created.
    pool = await create_writer_pool(database_url, size=1)
    try:
        in_2024 = EventWriter(pool, notify_channel="x", hot_days=7, today=lambda: date(2024, 3, 2))
        await in_2024.write(stage([batch([new_event(occurred_at="2024-02-29T23:59:59.999999Z")])]))
    finally:
        await pool.close()
    partition = await db.fetchval(
        "SELECT tableoid::regclass::text FROM events WHERE event_id = $1", stray
    )
    assert partition == "events_p20240229"
    assert await db.fetchval("SELECT count(*) FROM events_default") == 0
    assert await db.fetchval("SELECT count(*) FROM events_p20240229") == 2


async def test_cold_days_go_to_the_default_partition_without_new_partitions(
    writer: EventWriter, db: asyncpg.Connection
) -> None:
    """Days before the hot window get no partition, however many a batch spans."""
    events = [new_event(occurred_at=f"{2000 + i}-06-15T12:00:00Z") for i in range(20)]
    partitions_before = await db.fetchval(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
    )
    result = await writer.write(stage([batch(events)]))
    assert result.inserted == 20
    assert await db.fetchval("SELECT count(*) FROM events_default") == 20
    assert (
        await db.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass")
        == partitions_before
    )


async def test_rollups_follow_the_stored_events(
    writer: EventWriter, db: asyncpg.Connection
) -> None:
    events = [
        new_event(user_id="a", event_type="open", occurred_at="2025-08-01T10:00:00Z"),
        new_event(user_id="a", event_type="open", occurred_at="2025-08-01T11:00:00Z"),
        new_event(user_id="b", event_type="buy", occurred_at="2025-08-01T23:59:59+00:00"),
        new_event(user_id="b", event_type="buy", occurred_at="2025-08-02T00:30:00+01:00"),
    ]
    await writer.write(stage([batch(events)]))
    await writer.write(
        stage(
            [
                batch(
                    [
                        *events,
                        new_event(
                            user_id="c", event_type="open", occurred_at="2025-08-02T08:00:00Z"
                        ),
                    ]
                )
            ]
        )
    )
    users = await db.fetch("SELECT day, user_id FROM daily_users ORDER BY 1, 2")
    assert [(str(r["day"]), r["user_id"]) for r in users] == [
        ("2025-08-01", "a"),
        ("2025-08-01", "b"),
        ("2025-08-02", "c"),
    ]
    counts = await db.fetch(
        "SELECT day, event_type, sum(events)::int AS n FROM daily_event_counts "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert [(str(r["day"]), r["event_type"], r["n"]) for r in counts] == [
        ("2025-08-01", "buy", 2),
        ("2025-08-01", "open", 2),
        ("2025-08-02", "open", 1),
    ]


async def test_bad_data_is_classified_as_terminal(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.PostgresError) as info:
            await conn.execute("SELECT '{bad'::jsonb")
        assert isinstance(classify(info.value), BadData)
        with pytest.raises(asyncpg.PostgresError) as info2:
            await conn.execute("SELECT * FROM no_such_table")
        assert isinstance(classify(info2.value), StorageUnavailable)
    finally:
        await conn.close()


async def test_a_killed_connection_is_transient_and_the_retry_stores_once(
    writer: EventWriter, db: asyncpg.Connection, database_url: str
) -> None:
    """Cut the writer's connection mid-transaction: the error is transient, nothing of the
    batch is stored, and writing it again stores it exactly once."""
    b = batch([new_event() for _ in range(2000)])
    staged = stage([b])
    blocker = await asyncpg.connect(database_url)
    await blocker.execute("BEGIN; LOCK TABLE ingest_batches IN EXCLUSIVE MODE")
    task = asyncio.create_task(writer.write(staged))
    # Wait until the writer is blocked on the lock, then kill its backend.
    for _ in range(200):
        pid = await db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%ingest_batches%' AND pid <> pg_backend_pid()"
        )
        if pid:
            break
        await asyncio.sleep(0.02)
    assert pid, "writer never blocked"
    await db.execute("SELECT pg_terminate_backend($1)", pid)
    with pytest.raises(StorageUnavailable):
        await task
    await blocker.execute("ROLLBACK")
    await blocker.close()
    assert await db.fetchval("SELECT count(*) FROM events") == 0
    result = await writer.write(staged)
    assert result.inserted == 2000
    assert await db.fetchval("SELECT count(*) FROM events") == 2000


async def test_writer_session_settings_survive_the_pool_reset(database_url: str) -> None:
    pool = await create_writer_pool(database_url, size=1)
    try:
        for _ in range(2):  # the second acquire follows a release, i.e. RESET ALL
            async with pool.acquire() as conn:
                assert await conn.fetchval("SHOW jit") == "off"
                assert await conn.fetchval("SHOW temp_buffers") == "64MB"
                assert await conn.fetchval("SELECT to_regclass('claim_ids') IS NOT NULL")
    finally:
        await pool.close()
