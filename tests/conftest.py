"""Shared fixtures. Every test run gets its own PostgreSQL database and RabbitMQ queues.

The servers are the real local ones (``DATABASE_URL``/``RABBITMQ_URL`` point at them);
nothing here mocks PostgreSQL, RabbitMQ or Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest
from falcon import testing

from core.config import Settings, load_settings
from pipeline.topology import Topology, delete_queues
from pipeline.worker import Worker
from service.app import create_app
from storage.db import drop_database
from storage.migrate import migrate

API_KEY = "test-key-" + secrets.token_hex(8)
RUN_ID = secrets.token_hex(4)


def _database_url(name: str) -> str:
    base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    return urlunsplit(urlsplit(base)._replace(path=f"/{name}"))


def make_settings(**overrides: Any) -> Settings:
    """Settings for this test run (its own database and queue names)."""
    env = {
        "DATABASE_URL": _database_url(f"events_test_{RUN_ID}"),
        "RABBITMQ_URL": os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "API_KEY": API_KEY,
        "EVENTS_QUEUE_PREFIX": f"test_{RUN_ID}_{secrets.token_hex(3)}",
        "EVENTS_BATCH_MAX_AGE_MS": "50",
        "EVENTS_LOG_FORMAT": "text",
    }
    return load_settings(env).with_overrides(**overrides)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated database for the whole run, dropped at the end."""
    url = make_settings().database_url
    asyncio.run(migrate(url))
    yield url
    asyncio.run(drop_database(url))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the run's database, emptied before the test."""
    conn = await asyncpg.connect(database_url)
    await conn.execute(
        "TRUNCATE events, event_ids, ingest_batches, daily_users, daily_user_counts, "
        "daily_event_counts, lake_files, import_chunks"
    )
    yield conn
    await conn.close()


@pytest.fixture
async def settings(database_url: str, db: asyncpg.Connection) -> AsyncIterator[Settings]:
    """Settings with fresh queue names (queues deleted after the test)."""
    s = make_settings(database_url=database_url)
    yield s
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(s.rabbitmq_url)
        try:
            await delete_queues(connection, Topology.from_settings(s))
        finally:
            await connection.close()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[testing.ASGIConductor]:
    """The ASGI app, started (lifespan) against the real servers."""
    app = create_app(settings)
    async with testing.ASGIConductor(app, headers={"X-API-Key": API_KEY}) as conductor:
        yield conductor


class RunningWorker:
    def __init__(self, worker: Worker, stop: asyncio.Event, task: asyncio.Task[None]) -> None:
        self.worker = worker
        self.stop = stop
        self.task = task

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=30)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, **options: Any) -> AsyncIterator[RunningWorker]:
    """A worker consuming ``settings``' queue in this event loop (``options``: for ``Worker``)."""
    worker = Worker(settings, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    running = RunningWorker(worker, stop, task)
    try:
        yield running
    finally:
        if not task.done():
            await running.shutdown()
        elif task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[RunningWorker]:
    async with running_worker(settings) as running:
        yield running


async def wait_for_rows(
    conn: asyncpg.Connection, expected: int, *, timeout: float = 30.0, table: str = "events"
) -> int:
    """Poll until ``table`` holds ``expected`` rows (or the timeout passes); returns the count."""
    deadline = asyncio.get_running_loop().time() + timeout
    count = -1
    while asyncio.get_running_loop().time() < deadline:
        count = await conn.fetchval(f"SELECT count(*) FROM {table}")
        if count >= expected:
            return int(count)
        await asyncio.sleep(0.05)
    return int(count)


def new_event(**fields: Any) -> dict[str, Any]:
    """A valid event; keyword arguments replace or add fields."""
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2025-08-21T06:52:34+03:00",
        "user_id": "user-1",
        "event_type": "view_item",
        "properties": {"country": "UA"},
    }
    event.update(fields)
    return event


async def drain_queue(settings: Settings, name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message waiting on queue ``name``, taken off it."""
    connection = await aio_pika.connect(settings.rabbitmq_url)
    got = []
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        while (m := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(m)
    finally:
        await connection.close()
    return got


async def queue_depth(settings: Settings, name: str) -> int:
    """Messages ready on queue ``name``."""
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def wait_for_queue_depth(
    settings: Settings, name: str, expected: int, timeout: float = 10.0
) -> int:
    """Poll until queue ``name`` holds ``expected`` ready messages (or the timeout passes)."""
    deadline = asyncio.get_running_loop().time() + timeout
    depth = await queue_depth(settings, name)
    while depth < expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        depth = await queue_depth(settings, name)
    return depth


def broker_queues(*columns: str) -> dict[str, dict[str, Any]]:
    """``rabbitmqctl list_queues``: what the broker itself reports, by queue name."""
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "--formatter", "json", "name", *columns],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return {row["name"]: row for row in json.loads(out)}
