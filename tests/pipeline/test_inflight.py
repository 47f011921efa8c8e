"""EVENTS_WORKER_MAX_INFLIGHT_BYTES against the real RabbitMQ and PostgreSQL.

Writes are held up by a real lock (another connection holds ``event_ids`` in ACCESS
EXCLUSIVE mode, so every COPY waits); what the worker holds meanwhile is read from its own
accounting, its gauge and ``rabbitmqctl list_queues``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from core import metrics
from core.config import Settings
from core.ids import uuid7
from ingest.validate import Limits, validate_records
from pipeline.message import BatchMeta, amqp_headers, encode_message
from pipeline.publisher import Publisher
from tests.conftest import (
    broker_queues,
    new_event,
    queue_depth,
    running_worker,
    wait_for_queue_depth,
    wait_for_rows,
)
from tests.ingest.test_protection import sample
from tests.pipeline.conftest import NOW

EVENTS_PER_MESSAGE = 10
PAD = 100_000  # bytes of properties per event: a message of about 1 MB


def big_message() -> tuple[bytes, BatchMeta, list[uuid.UUID]]:
    """A message of EVENTS_PER_MESSAGE events; every one of them has the same size."""
    events = [
        new_event(user_id="user-1", properties={"pad": "x" * PAD})
        for _ in range(EVENTS_PER_MESSAGE)
    ]
    table = validate_records(events, Limits(max_event_bytes=2 * PAD), NOW).table
    meta = BatchMeta(batch_id=uuid7(), received_at=NOW, key_id="key_test", source="json")
    return encode_message(table, meta), meta, [uuid.UUID(e["event_id"]) for e in events]


async def publish_all(publisher: Publisher, count: int) -> tuple[list[int], list[uuid.UUID]]:
    sizes, ids = [], []
    for _ in range(count):
        body, meta, event_ids = big_message()
        await publisher.publish(
            body,
            message_id=str(meta.batch_id),
            timestamp=NOW,
            headers=amqp_headers(meta, EVENTS_PER_MESSAGE),
        )
        sizes.append(len(body))
        ids += event_ids
    return sizes, ids


@pytest.fixture
async def blocked_writes(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """Every write waits for this connection's lock until it rolls back."""
    blocker = await asyncpg.connect(database_url)
    await blocker.execute("BEGIN; LOCK TABLE event_ids IN ACCESS EXCLUSIVE MODE")
    yield blocker
    if not blocker.is_closed():
        await blocker.close()


def gauge() -> float:
    return sample(metrics.render().decode(), "events_worker_inflight_bytes")


async def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``condition`` until it holds or ``timeout`` passed (the asserts say which)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)


async def unacked_once_reported(queue: str, messages: int, timeout: float = 20.0) -> int | None:
    """``messages_unacknowledged`` of ``queue`` from the first rabbitmqctl report that counts
    all ``messages`` (None if none did within ``timeout``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        row = (await asyncio.to_thread(broker_queues, "messages", "messages_unacknowledged"))[queue]
        if row["messages"] == messages:
            return int(row["messages_unacknowledged"])
        await asyncio.sleep(0.5)
    return None


async def test_held_bytes_stay_under_the_cap_while_writes_wait_and_all_lands_after(
    settings: Settings,
    db: asyncpg.Connection,
    publisher: Publisher,
    blocked_writes: asyncpg.Connection,
) -> None:
    """30 messages of about 1 MB, a cap of 4.5 of them and the default prefetch of 256
    messages: without the cap the worker would take all 30 (30 MB) while its writes wait."""
    sizes, ids = await publish_all(publisher, 30)
    size = sizes[0]
    assert set(sizes) == {size}  # equal bodies: the bound is the cap itself
    cap = 4 * size + size // 2
    capped = settings.with_overrides(worker_max_inflight_bytes=cap, retry_base_ms=50)
    assert capped.prefetch == 256
    baseline = gauge()
    async with running_worker(capped) as running:
        held = running.worker.in_flight
        await wait_until(lambda: held.bytes >= 4 * size)
        await asyncio.sleep(1.0)  # anything still on its way arrives meanwhile
        held_while_blocked, gauge_while_blocked = held.bytes, gauge() - baseline
        # Ready messages, from the broker at once (a passive declare) ...
        ready = await queue_depth(settings, settings.queue_name)
        # ... and the unacknowledged ones as rabbitmqctl reports them: its queue statistics
        # are refreshed every few seconds, so wait for a report of all 30 messages.
        unacked = await unacked_once_reported(settings.queue_name, 30)
        assert await db.fetchval("SELECT count(*) FROM ingest_batches") == 0
        await blocked_writes.execute("ROLLBACK")
        assert await wait_for_rows(db, 30, table="ingest_batches") == 30
        assert not running.task.done()
    assert held_while_blocked == 4 * size
    assert gauge_while_blocked == 4 * size
    assert held.peak == 4 * size <= cap
    assert ready == 26
    assert unacked is not None and unacked <= 4
    assert held.bytes == 0
    assert gauge() == baseline
    stored = [r["event_id"] for r in await db.fetch("SELECT event_id FROM events")]
    assert sorted(stored) == sorted(ids)
    assert await queue_depth(settings, settings.queue_name) == 0


async def test_messages_larger_than_the_cap_are_taken_one_at_a_time(
    settings: Settings,
    db: asyncpg.Connection,
    publisher: Publisher,
    blocked_writes: asyncpg.Connection,
) -> None:
    """A cap smaller than one message does not stop the worker: it holds one at a time."""
    sizes, ids = await publish_all(publisher, 5)
    capped = settings.with_overrides(worker_max_inflight_bytes=sizes[0] // 10, retry_base_ms=50)
    async with running_worker(capped) as running:
        held = running.worker.in_flight
        await wait_until(lambda: held.bytes > 0)
        await asyncio.sleep(1.0)
        held_while_blocked = held.bytes
        ready = await queue_depth(settings, settings.queue_name)
        unacked = await unacked_once_reported(settings.queue_name, 5)
        await blocked_writes.execute("ROLLBACK")
        assert await wait_for_rows(db, 5, table="ingest_batches") == 5
    assert held_while_blocked == sizes[0]
    assert ready == 4
    assert unacked is not None and unacked <= 1
    assert held.peak == max(sizes)
    stored = [r["event_id"] for r in await db.fetch("SELECT event_id FROM events")]
    assert sorted(stored) == sorted(ids)


async def test_a_worker_stopped_while_paused_returns_everything_it_held(
    settings: Settings,
    db: asyncpg.Connection,
    publisher: Publisher,
    blocked_writes: asyncpg.Connection,
) -> None:
    """Stopped while its writes wait and its consumer is at the cap: every message goes back
    to the queue (the inbox's by nack, the cut-short writes' with the connection), its gauge
    returns to where it was, and a new worker stores each event once."""
    sizes, ids = await publish_all(publisher, 12)
    capped = settings.with_overrides(
        worker_max_inflight_bytes=3 * sizes[0], retry_base_ms=50, shutdown_timeout=1.0
    )
    baseline = gauge()
    async with running_worker(capped) as first:
        held = first.worker.in_flight
        await wait_until(lambda: held.bytes >= 3 * sizes[0])
        await first.shutdown()
    assert held.peak == 3 * sizes[0]
    assert held.bytes == 0
    assert gauge() == baseline
    assert await wait_for_queue_depth(settings, settings.queue_name, 12) == 12
    await blocked_writes.execute("ROLLBACK")
    async with running_worker(capped):
        assert await wait_for_rows(db, 12, table="ingest_batches") == 12
    stored = [r["event_id"] for r in await db.fetch("SELECT event_id FROM events")]
    assert sorted(stored) == sorted(ids)
