"""Large bodies are decoded off the event loop within a byte budget; refusals cost tokens.

In-process (ASGI) tests against the real RabbitMQ, PostgreSQL and Redis; the real-process
behaviour (``/healthz`` while maximal bodies are decoded, a full budget answering 503)
is in ``tests/test_adversity.py``.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from falcon import testing

from core import metrics
from core.config import Settings
from ingest.decoder import ByteBudget
from service.app import create_app
from tests.conftest import API_KEY, new_event, running_worker, wait_for_rows

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def redis_keys(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(settings.redis_url)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{settings.queue_prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_a_large_body_is_decoded_in_a_decoding_process_and_stored(
    settings: Settings, db: asyncpg.Connection
) -> None:
    events = [new_event(properties={"pad": "x" * 200, "n": i}) for i in range(8000)]
    body = orjson.dumps(events)
    assert len(body) > settings.decode_inline_bytes
    small = orjson.dumps(events[:3])
    before = metrics.DECODED_OFF_LOOP._value.get()
    app = create_app(settings)
    async with (
        testing.ASGIConductor(app, headers={"X-API-Key": API_KEY}) as c,
        running_worker(settings.with_overrides(hot_days=10_000)),
    ):
        large = await c.simulate_post("/events", body=body, headers=JSON)
        zipped = await c.simulate_post(
            "/events", body=gzip.compress(body), headers={**JSON, "Content-Encoding": "gzip"}
        )
        inline = await c.simulate_post("/events", body=small, headers=JSON)
        stored = await wait_for_rows(db, 8000)
    assert (large.status_code, large.json["accepted"]) == (202, 8000)
    assert (zipped.status_code, zipped.json["accepted"]) == (202, 8000)  # the same events
    assert (inline.status_code, inline.json["accepted"]) == (202, 3)
    # The plain and the gzipped large bodies went to a decoding process; the small one not.
    assert metrics.DECODED_OFF_LOOP._value.get() == before + 2
    assert stored == 8000
    rows = await db.fetch("SELECT properties->>'n' AS n FROM events")
    assert sorted(int(r["n"]) for r in rows) == list(range(8000))


async def test_a_refusal_from_a_decoding_process_is_the_same_4xx(settings: Settings) -> None:
    body = b"[" + b",".join([b"{}"] * 100_000) + b"]"  # 300 KB: decoded in a process
    bad = b"[" + orjson.dumps(new_event())[:-1] + b"," * 300_000 + b"]"
    async with testing.ASGIConductor(create_app(settings), headers={"X-API-Key": API_KEY}) as c:
        many = await c.simulate_post("/events", body=body, headers=JSON)
        broken = await c.simulate_post("/events", body=bad, headers=JSON)
    assert many.status_code == 413
    assert many.json["error"]["code"] == "too_many_events"
    assert many.json["error"]["limit"] == settings.max_events_per_request
    assert broken.status_code == 400
    assert broken.json["error"]["code"] == "invalid_json"


async def test_every_request_costs_its_key_a_token_even_when_refused(
    settings: Settings, redis_keys: aioredis.Redis
) -> None:
    limited = settings.with_overrides(rate_limit=0.001, rate_burst=5)
    async with testing.ASGIConductor(create_app(limited), headers={"X-API-Key": API_KEY}) as c:
        refused = [await c.simulate_post("/events", body=b"[{", headers=JSON) for _ in range(5)]
        # The bucket is empty now: the next request is refused before its body is read.
        valid = await c.simulate_post("/events", body=orjson.dumps([new_event()]), headers=JSON)
    assert [r.status_code for r in refused] == [400] * 5
    assert [r.json["error"]["code"] for r in refused] == ["invalid_json"] * 5
    assert valid.status_code == 429
    assert valid.json["error"]["code"] == "rate_limited"
    assert int(valid.headers["retry-after"]) >= 1


async def test_the_byte_budget_is_first_come_first_served_and_times_out() -> None:
    budget = ByteBudget(100)
    assert await budget.acquire(60, timeout=1)
    waiting = asyncio.create_task(budget.acquire(60, timeout=5))
    await asyncio.sleep(0.05)
    # A small request behind a waiting large one waits its turn rather than overtaking it.
    assert not await budget.acquire(10, timeout=0.05)
    budget.release(60)
    assert await waiting
    assert budget.available == 40
    assert not await budget.acquire(50, timeout=0.05)  # does not fit: refused after the wait
    assert budget.available == 40
    budget.release(60)
    assert budget.available == 100
    assert await budget.acquire(1000, timeout=0.05)  # larger than all: takes all, not never
    assert budget.available == 0
