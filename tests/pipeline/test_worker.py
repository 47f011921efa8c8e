"""Workers against the real RabbitMQ and PostgreSQL: exactly once, dead letters, adversity."""

from __future__ import annotations

import asyncio
import random
import uuid

import aio_pika
import asyncpg
import pyarrow as pa

from core.config import Settings
from core.ids import uuid7
from ingest.validate import Limits, validate_records
from pipeline.message import BatchMeta, DecodedBatch, decode_message, encode_message
from pipeline.publisher import Publisher
from tests.conftest import (
    drain_queue,
    new_event,
    queue_depth,
    running_worker,
    wait_for_queue_depth,
    wait_for_rows,
)
from tests.pipeline.conftest import NOW, message, publish


async def test_worker_stores_batches_once_and_acks_them(
    settings: Settings, db: asyncpg.Connection, publisher: Publisher
) -> None:
    pool = [new_event(user_id=f"u{i}") for i in range(500)]
    rng = random.Random(1)
    sent = [rng.sample(pool, 100) for _ in range(20)]
    distinct = {e["event_id"] for batch in sent for e in batch}
    async with running_worker(settings):
        for events in sent:
            await publish(publisher, events)
        assert await wait_for_rows(db, len(distinct)) == len(distinct)
        assert await wait_for_rows(db, 20, table="ingest_batches") == 20
    assert await db.fetchval("SELECT count(DISTINCT event_id) FROM events") == len(distinct)
    assert await db.fetchval("SELECT sum(inserted) FROM ingest_batches") == len(distinct)
    assert await db.fetchval("SELECT sum(events) FROM ingest_batches") == 2000
    assert await queue_depth(settings, settings.queue_name) == 0


async def test_two_workers_at_once_store_each_event_once(
    settings: Settings, db: asyncpg.Connection, publisher: Publisher
) -> None:
    small = settings.with_overrides(prefetch=2, batch_max_rows=300)
    pool = [new_event(user_id=f"u{i % 40}") for i in range(1000)]
    rng = random.Random(2)
    sent = [rng.sample(pool, 200) for _ in range(40)]
    distinct = {e["event_id"] for batch in sent for e in batch}
    async with running_worker(small) as w1, running_worker(small) as w2:
        await asyncio.sleep(0.5)  # both consumers attached: the broker alternates deliveries
        await asyncio.gather(*(publish(publisher, events) for events in sent))
        assert await wait_for_rows(db, 40, table="ingest_batches") == 40
        assert w1.worker.stored_batches > 0 and w2.worker.stored_batches > 0
    assert await db.fetchval("SELECT count(*) FROM events") == len(distinct)
    assert await db.fetchval("SELECT count(DISTINCT event_id) FROM events") == len(distinct)
    assert w1.worker.stored_events + w2.worker.stored_events == len(distinct)


async def _dead_letters(settings: Settings) -> list[aio_pika.abc.AbstractIncomingMessage]:
    return await drain_queue(settings, settings.dead_letter_queue_name)


async def test_undecodable_message_goes_to_the_dead_letter_queue(
    settings: Settings, db: asyncpg.Connection, publisher: Publisher
) -> None:
    good = [new_event() for _ in range(10)]
    async with running_worker(settings):
        await publisher.publish(
            b"this is not arrow", message_id="junk-1", timestamp=NOW, headers={"x-events": 1}
        )
        await publish(publisher, good)
        assert await wait_for_rows(db, 10) == 10
        assert await wait_for_queue_depth(settings, settings.dead_letter_queue_name, 1) == 1
    letters = await _dead_letters(settings)
    assert len(letters) == 1
    assert letters[0].body == b"this is not arrow"
    assert letters[0].message_id == "junk-1"
    assert letters[0].headers["x-dead-letter-reason"] == "undecodable"
    assert "Arrow" in str(letters[0].headers["x-error"])
    assert letters[0].headers["x-original-queue"] == settings.queue_name
    assert await queue_depth(settings, settings.queue_name) == 0


async def test_a_message_postgres_refuses_is_isolated_and_the_rest_stored(
    settings: Settings, db: asyncpg.Connection, publisher: Publisher
) -> None:
    """A producer that bypassed the API's validation sent properties that are not JSON.
    Only that message is dead-lettered; the others of its micro-batch are stored."""
    bad_table = validate_records([new_event()], Limits(), NOW).table
    bad_table = bad_table.set_column(4, "properties", pa.array(["{not json"], pa.string()))
    bad_meta = BatchMeta(batch_id=uuid7(), received_at=NOW, key_id="rogue", source="json")
    goods = [[new_event() for _ in range(5)] for _ in range(6)]
    slow = settings.with_overrides(batch_max_age_ms=500)  # all seven land in one micro-batch
    async with running_worker(slow):
        for i, events in enumerate(goods):
            if i == 3:
                await publisher.publish(
                    encode_message(bad_table, bad_meta),
                    message_id=str(bad_meta.batch_id),
                    timestamp=NOW,
                    headers={},
                )
            await publish(publisher, events)
        assert await wait_for_rows(db, 30) == 30
        assert await wait_for_queue_depth(settings, settings.dead_letter_queue_name, 1) == 1
    letters = await _dead_letters(settings)
    assert [m.message_id for m in letters] == [str(bad_meta.batch_id)]
    assert letters[0].headers["x-dead-letter-reason"] == "refused_by_database"
    assert await db.fetchval("SELECT count(*) FROM events") == 30
    assert (
        await db.fetchval("SELECT count(*) FROM events WHERE batch_id = $1", bad_meta.batch_id) == 0
    )


async def test_connections_killed_during_load_lose_and_duplicate_nothing(
    settings: Settings, db: asyncpg.Connection, publisher: Publisher, database_url: str
) -> None:
    """Adversity: writer connections are terminated again and again while batches flow."""
    fast_retry = settings.with_overrides(retry_base_ms=20, retry_max_ms=200)
    pool = [new_event(user_id=f"u{i}") for i in range(3000)]
    rng = random.Random(3)
    sent = [rng.sample(pool, 300) for _ in range(30)]
    distinct = {e["event_id"] for batch in sent for e in batch}
    killer = await asyncpg.connect(database_url)
    kills = 0
    try:
        async with running_worker(fast_retry):
            for i, events in enumerate(sent):
                await publish(publisher, events)
                if i % 3 == 0:
                    kills += len(
                        await killer.fetch(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND application_name = 'events' "
                            "AND pid <> pg_backend_pid()"
                        )
                    )
                await asyncio.sleep(0.02)
            assert await wait_for_rows(db, 30, table="ingest_batches") == 30
    finally:
        await killer.close()
    assert kills > 0
    assert await db.fetchval("SELECT count(*) FROM events") == len(distinct)
    assert await db.fetchval("SELECT count(DISTINCT event_id) FROM events") == len(distinct)
    assert {str(r["event_id"]) for r in await db.fetch("SELECT event_id FROM events")} == distinct


async def test_nothing_is_acked_while_postgres_blocks_writes_and_all_lands_after(
    settings: Settings, db: asyncpg.Connection, publisher: Publisher, database_url: str
) -> None:
    """While the ledger is locked by someone else, nothing commits (and nothing is acked);
    once the lock is gone every event is stored exactly once."""
    patient = settings.with_overrides(retry_base_ms=50, retry_max_ms=200)
    blocker = await asyncpg.connect(database_url)
    await blocker.execute("BEGIN; LOCK TABLE event_ids IN ACCESS EXCLUSIVE MODE")
    ids = []
    try:
        async with running_worker(patient):
            for _ in range(5):
                events = [new_event() for _ in range(50)]
                ids += [uuid.UUID(e["event_id"]) for e in events]
                await publish(publisher, events)
            await asyncio.sleep(1.0)
            assert await db.fetchval("SELECT count(*) FROM ingest_batches") == 0
            await blocker.execute("ROLLBACK")
            assert await wait_for_rows(db, 250) == 250
    finally:
        if not blocker.is_closed():
            await blocker.close()
    assert sorted(r["event_id"] for r in await db.fetch("SELECT event_id FROM events")) == sorted(
        ids
    )


def far_future_message() -> tuple[bytes, BatchMeta]:
    """A message that decodes (a producer bypassed the API's date checks) but cannot be
    staged: its occurred_at lies in year 18029, beyond what a Python date can hold."""
    table = validate_records([new_event()], Limits(), NOW).table
    far = pa.array([2 * 253_402_300_800_000_000], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    meta = BatchMeta(batch_id=uuid7(), received_at=NOW, key_id="rogue", source="arrow")
    return encode_message(table.set_column(1, "occurred_at", far), meta), meta


async def test_a_message_that_breaks_staging_is_isolated_and_the_worker_goes_on(
    settings: Settings, db: asyncpg.Connection, publisher: Publisher
) -> None:
    """Staging raising (not the database refusing) costs only the message that causes it:
    no crash, no redelivery loop; the rest of its micro-batch and later messages are stored."""
    bad_body, bad_meta = far_future_message()
    decode_message(bad_body)  # the worker's decode step lets it through
    goods = [[new_event() for _ in range(5)] for _ in range(6)]
    slow = settings.with_overrides(batch_max_age_ms=500)  # all seven land in one micro-batch
    async with running_worker(slow) as running:
        for i, events in enumerate(goods):
            if i == 3:
                await publisher.publish(
                    bad_body, message_id=str(bad_meta.batch_id), timestamp=NOW, headers={}
                )
            await publish(publisher, events)
        assert await wait_for_rows(db, 30) == 30
        assert await wait_for_queue_depth(settings, settings.dead_letter_queue_name, 1) == 1
        assert not running.task.done()
        later = [new_event() for _ in range(7)]
        await publish(publisher, later)
        assert await wait_for_rows(db, 37) == 37
        assert not running.task.done()
    letters = await _dead_letters(settings)
    assert [m.message_id for m in letters] == [str(bad_meta.batch_id)]
    assert letters[0].body == bad_body
    assert letters[0].headers["x-dead-letter-reason"] == "staging_failed"
    assert letters[0].headers["x-error"] == "ValueError: year 18029 is out of range"
    assert letters[0].headers["x-write-attempts"] == 0
    stored = {str(r["event_id"]) for r in await db.fetch("SELECT event_id FROM events")}
    assert stored == {e["event_id"] for events in [*goods, later] for e in events}
    assert await db.fetchval("SELECT count(*) FROM events") == 37
    assert await db.fetchval("SELECT count(*) FROM ingest_batches") == 7
    assert await queue_depth(settings, settings.queue_name) == 0


async def test_any_error_while_decoding_dead_letters_the_message_and_the_worker_goes_on(
    settings: Settings, db: asyncpg.Connection, publisher: Publisher
) -> None:
    """An error ``decode_message`` does not foresee (here a decoder that raises
    ``RuntimeError`` for one body) is dead-lettered like an undecodable body."""
    goods = [[new_event() for _ in range(4)] for _ in range(3)]
    cursed, _ = message([new_event()])

    def decode(body: bytes) -> DecodedBatch:
        if body == cursed:
            raise RuntimeError("decoder bug")
        return decode_message(body)

    async with running_worker(settings, decode=decode) as running:
        await publish(publisher, goods[0])
        await publisher.publish(cursed, message_id="cursed-1", timestamp=NOW, headers={})
        for events in goods[1:]:
            await publish(publisher, events)
        assert await wait_for_rows(db, 12) == 12
        assert await wait_for_queue_depth(settings, settings.dead_letter_queue_name, 1) == 1
        assert not running.task.done()
    letters = await _dead_letters(settings)
    assert [m.message_id for m in letters] == ["cursed-1"]
    assert letters[0].body == cursed
    assert letters[0].headers["x-dead-letter-reason"] == "undecodable"
    assert letters[0].headers["x-error"] == "RuntimeError: decoder bug"
    assert await db.fetchval("SELECT count(*) FROM events") == 12
    assert await queue_depth(settings, settings.queue_name) == 0


def test_which_errors_count_as_the_message_s_fault() -> None:
    """Any Exception and a Rust panic (pyo3 derives it from BaseException) isolate the
    message; interrupts, exits and cancellation stop the worker."""
    import polars.exceptions

    from pipeline.steps import is_message_fault

    assert is_message_fault(ValueError("year 18029 is out of range"))
    assert is_message_fault(MemoryError())
    assert is_message_fault(polars.exceptions.PanicException("called `Option::unwrap()`"))
    assert not is_message_fault(KeyboardInterrupt())
    assert not is_message_fault(SystemExit(1))
    assert not is_message_fault(asyncio.CancelledError())
