"""Micro-benchmarks of each hot step, per 1,000-event batch (pytest-benchmark).

    make bench-micro        # = pytest bench --benchmark-only --benchmark-enable

Each step is fed the same seeded batch the macro benchmark (``events bench``) sends.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from bench.harness import generate, serialise
from core.ids import uuid7
from ingest.media import ARROW, JSON, NDJSON, decode_batch
from ingest.validate import Limits
from pipeline.message import BatchMeta, DecodedBatch, decode_message, encode_message
from pipeline.steps.write import stage_messages as stage
from storage.writer import EventWriter, create_writer_pool

NOW = datetime.now(UTC)
TABLE = generate(20_000, users=10_000, days=30, seed=3)
BATCH = TABLE.slice(0, 1000)
BODIES = {fmt: serialise(BATCH, fmt, 1000, None)[0] for fmt in ("json", "ndjson", "arrow")}
MEDIA = {"json": JSON, "ndjson": NDJSON, "arrow": ARROW}


def decode(fmt: str) -> Any:
    return decode_batch(
        MEDIA[fmt], BODIES[fmt], limits=Limits(), now=NOW, max_events=50_000, max_bytes=1 << 25
    )


@pytest.mark.parametrize("fmt", ["json", "ndjson", "arrow"])
def test_decode_and_validate(benchmark: Any, fmt: str) -> None:
    """Body bytes -> validated EVENT_SCHEMA table (what the API does per request)."""
    batch = benchmark(decode, fmt)
    assert batch.accepted == 1000


def test_json_decode_only(benchmark: Any) -> None:
    events = benchmark(orjson.loads, BODIES["json"])
    assert len(events) == 1000


def test_build_message(benchmark: Any) -> None:
    table = decode("json").table
    meta = BatchMeta(uuid7(), NOW, "key_bench", "json")
    body = benchmark(encode_message, table, meta)
    assert decode_message(body).rows == 1000


def _messages(n: int) -> list[DecodedBatch]:
    return [
        DecodedBatch(TABLE.slice(i * 1000, 1000), BatchMeta(uuid7(), NOW, "k", "json"))
        for i in range(n)
    ]


def test_stage_micro_batch(benchmark: Any) -> None:
    """20 messages -> one frame, first-wins dedupe, COPY payloads and rollups (20,000 rows)."""
    messages = _messages(20)
    staged = benchmark(stage, messages)
    assert staged.rows.rows == 20_000


def test_copy_and_commit(benchmark: Any, database_url: str) -> None:
    """One micro-batch of 20,000 new events stored and committed (claim, COPY, rollups)."""

    async def setup() -> tuple[asyncpg.Pool, EventWriter]:
        pool = await create_writer_pool(database_url, size=1)
        return pool, EventWriter(pool, notify_channel="bench")

    loop = asyncio.new_event_loop()
    pool, writer = loop.run_until_complete(setup())

    def fresh_batch() -> tuple[tuple[Any, ...], dict[str, Any]]:
        table = generate(20_000, users=10_000, days=30, seed=uuid.uuid4().int % 2**32)
        return (stage([DecodedBatch(table, BatchMeta(uuid7(), NOW, "k", "json"))]),), {}

    result = benchmark.pedantic(
        lambda s: loop.run_until_complete(writer.write(s)), setup=fresh_batch, rounds=5
    )
    assert result.inserted == 20_000
    loop.run_until_complete(pool.close())
    loop.close()
