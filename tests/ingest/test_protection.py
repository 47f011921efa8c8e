"""Protection at the edge, against the real Redis, RabbitMQ and PostgreSQL.

Rate limits, Idempotency-Key, queue-full backpressure, compression ratio, slow bodies and
the metrics that report them.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from falcon import testing

from core.codes import Refusal
from core.config import Settings
from ingest.body import read_body
from service.app import create_app
from tests.conftest import API_KEY, drain_queue, new_event

JSON = {"Content-Type": "application/json"}
OTHER_KEY = "other-key-for-idempotency-scoping"


def events(n: int) -> bytes:
    return orjson.dumps([new_event() for _ in range(n)])


@pytest.fixture
async def redis_keys(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A Redis client; every key under this test's prefix is deleted afterwards."""
    client = aioredis.from_url(settings.redis_url)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{settings.queue_prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def conductor(settings: Settings, key: str = API_KEY) -> testing.ASGIConductor:
    return testing.ASGIConductor(create_app(settings), headers={"X-API-Key": key})


# --- rate limits ---------------------------------------------------------------------


async def test_token_bucket_refuses_a_burst_with_headers_and_refills_at_the_rate(
    settings: Settings, redis_keys: aioredis.Redis
) -> None:
    limited = settings.with_overrides(rate_limit=20.0, rate_burst=40)
    async with conductor(limited) as c:
        first = await c.simulate_post("/events", body=events(40), headers=JSON)
        refused = await c.simulate_post("/events", body=events(10), headers=JSON)
        await asyncio.sleep(0.6)  # 20 events/s: 12 tokens back
        after_refill = await c.simulate_post("/events", body=events(10), headers=JSON)
        too_big = await c.simulate_post("/events", body=events(41), headers=JSON)
    assert first.status_code == 202
    assert first.headers["ratelimit-limit"] == "40"
    assert first.headers["ratelimit-remaining"] == "0"
    assert first.headers["ratelimit-reset"] == "2"  # 40 tokens at 20/s
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "rate_limited"
    assert refused.headers["retry-after"] == "1"  # 10 tokens at 20/s: 0.5 s, rounded up
    assert refused.headers["ratelimit-limit"] == "40"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert after_refill.status_code == 202
    # 0.6 s at 20/s refilled 12 (a little more with the requests' own time): 10 were taken.
    assert 2 <= int(after_refill.headers["ratelimit-remaining"]) <= 4
    assert too_big.status_code == 413
    assert too_big.json["error"]["code"] == "rate_limit_exceeds_burst"
    # Only the accepted requests reached the queue.
    assert [m.headers["x-events"] for m in await drain_queue(limited, limited.queue_name)] == [
        40,
        10,
    ]


async def test_two_api_instances_share_one_bucket(
    settings: Settings, redis_keys: aioredis.Redis
) -> None:
    limited = settings.with_overrides(rate_limit=0.001, rate_burst=30)
    async with conductor(limited) as a, conductor(limited) as b:
        on_a = await a.simulate_post("/events", body=events(20), headers=JSON)
        on_b = await b.simulate_post("/events", body=events(20), headers=JSON)
        # The refused request cost its key one token: 9 of the 10 left.
        small_on_b = await b.simulate_post("/events", body=events(9), headers=JSON)
    assert on_a.status_code == 202
    assert on_b.status_code == 429
    assert small_on_b.status_code == 202
    assert small_on_b.headers["ratelimit-remaining"] == "0"


async def test_per_key_overrides_and_requests_per_minute(
    settings: Settings, redis_keys: aioredis.Redis
) -> None:
    from service.auth import key_id

    both = settings.with_overrides(
        api_keys_list=(OTHER_KEY,),
        rate_limit=1.0,
        rate_burst=5,
        rate_limit_overrides={key_id(OTHER_KEY): (1000.0, 1000)},
    )
    async with conductor(both) as default_key, conductor(both, OTHER_KEY) as big_key:
        small = await default_key.simulate_post("/events", body=events(6), headers=JSON)
        big = await big_key.simulate_post("/events", body=events(500), headers=JSON)
    assert small.status_code == 413
    assert big.status_code == 202
    assert big.headers["ratelimit-limit"] == "1000"

    per_minute = settings.with_overrides(rate_limit_rpm=2)
    async with conductor(per_minute) as c:
        codes = [
            (await c.simulate_post("/events", body=events(1), headers=JSON)).status_code
            for _ in range(3)
        ]
        last = await c.simulate_post("/events", body=events(1), headers=JSON)
    assert codes == [202, 202, 429]
    assert int(last.headers["retry-after"]) > 0


async def test_redis_down_fails_open_by_default_and_closed_when_asked(
    settings: Settings,
) -> None:
    from core import metrics

    down = settings.with_overrides(redis_url="redis://127.0.0.1:1/0", rate_limit=1.0, rate_burst=5)
    before = metrics.REDIS_ERRORS._value.get()
    async with conductor(down) as c:
        served = await c.simulate_post("/events", body=events(3), headers=JSON)
        ready = await c.simulate_get("/readyz")
    assert served.status_code == 202
    assert "ratelimit-limit" not in served.headers
    assert metrics.REDIS_ERRORS._value.get() == before + 1
    assert ready.status_code == 200  # fail open: Redis does not decide readiness
    assert ready.json["checks"]["redis"] == "unreachable"

    closed = down.with_overrides(redis_failure="closed")
    async with conductor(closed) as c:
        refused = await c.simulate_post("/events", body=events(3), headers=JSON)
        ready = await c.simulate_get("/readyz")
    assert refused.status_code == 503
    assert refused.json["error"]["code"] == "redis_unavailable"
    assert int(refused.headers["retry-after"]) > 0
    assert ready.status_code == 503
    assert len(await drain_queue(settings, settings.queue_name)) == 1


# --- Idempotency-Key -----------------------------------------------------------------


async def test_idempotency_key_replays_the_answer_without_enqueueing(
    settings: Settings, redis_keys: aioredis.Redis
) -> None:
    batch = events(5)
    headers = {**JSON, "Idempotency-Key": "order-42"}
    async with conductor(settings) as c:
        first = await c.simulate_post("/events", body=batch, headers=headers)
        again = await c.simulate_post("/events", body=batch, headers=headers)
        changed = await c.simulate_post("/events", body=events(5), headers=headers)
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json == first.json
    assert changed.status_code == 422
    assert changed.json["error"]["code"] == "idempotency_key_reused"
    queued = await drain_queue(settings, settings.queue_name)
    assert [m.message_id for m in queued] == [first.json["batch_id"]]


async def test_idempotency_keys_are_scoped_per_api_key(
    settings: Settings, redis_keys: aioredis.Redis
) -> None:
    both = settings.with_overrides(api_keys_list=(OTHER_KEY,))
    headers = {**JSON, "Idempotency-Key": "same-key"}
    async with conductor(both) as a, conductor(both, OTHER_KEY) as b:
        on_a = await a.simulate_post("/events", body=events(2), headers=headers)
        on_b = await b.simulate_post("/events", body=events(3), headers=headers)
    assert (on_a.status_code, on_b.status_code) == (202, 202)
    assert on_a.json["batch_id"] != on_b.json["batch_id"]
    assert len(await drain_queue(settings, settings.queue_name)) == 2


async def test_same_key_while_the_first_is_in_flight_is_409(
    settings: Settings, redis_keys: aioredis.Redis
) -> None:
    batch = events(2)
    headers = {**JSON, "Idempotency-Key": "slow-one"}
    async with conductor(settings) as c:
        # No worker runs: ?wait=true holds the first request open for its timeout.
        first = asyncio.create_task(
            c.simulate_post("/events?wait=true&timeout=1.5", body=batch, headers=headers)
        )
        await asyncio.sleep(0.5)
        second = await c.simulate_post("/events", body=batch, headers=headers)
        first_result = await first
        third = await c.simulate_post("/events", body=batch, headers=headers)
    assert second.status_code == 409
    assert second.json["error"]["code"] == "idempotency_key_in_flight"
    assert second.headers["retry-after"] == "1"
    assert first_result.status_code == 202
    assert third.status_code == 202
    assert third.headers["idempotent-replayed"] == "true"
    assert third.json["batch_id"] == first_result.json["batch_id"]
    assert len(await drain_queue(settings, settings.queue_name)) == 1


async def test_refusals_a_retry_could_pass_are_not_remembered(
    settings: Settings, redis_keys: aioredis.Redis
) -> None:
    limited = settings.with_overrides(rate_limit=0.001, rate_burst=5)
    headers = {**JSON, "Idempotency-Key": "retry-me"}
    bad = {**JSON, "Idempotency-Key": "bad-one"}
    async with conductor(limited) as c:
        await c.simulate_post("/events", body=events(5), headers=JSON)  # empties the bucket
        batch = events(2)
        refused = await c.simulate_post("/events", body=batch, headers=headers)
        await redis_keys.delete(*[k async for k in redis_keys.scan_iter(match="*:rl:*")])
        # Each of these costs a token (refused or replayed): 5 - 2 leaves room for the retry.
        invalid = await c.simulate_post("/events", body=b"[{", headers=bad)
        invalid_again = await c.simulate_post("/events", body=b"[{", headers=bad)
        retried = await c.simulate_post("/events", body=batch, headers=headers)
    assert refused.status_code == 429
    assert retried.status_code == 202
    assert "idempotent-replayed" not in retried.headers
    # A 400 is final: the same request gets the same answer, replayed.
    assert invalid.status_code == invalid_again.status_code == 400
    assert invalid_again.headers["idempotent-replayed"] == "true"


async def test_an_invalid_idempotency_key_is_400(settings: Settings) -> None:
    async with conductor(settings) as c:
        result = await c.simulate_post(
            "/events", body=events(1), headers={**JSON, "Idempotency-Key": "x" * 300}
        )
    assert (result.status_code, result.json["error"]["code"]) == (400, "invalid_idempotency_key")


# --- backpressure and limits -----------------------------------------------------------


async def test_a_full_queue_answers_503_with_retry_after_and_takes_nothing(
    settings: Settings,
) -> None:
    small = settings.with_overrides(queue_max_messages=2)
    async with conductor(small) as c:
        codes = []
        for _ in range(6):
            codes.append(await c.simulate_post("/events", body=events(3), headers=JSON))
    accepted = [r for r in codes if r.status_code == 202]
    refused = [r for r in codes if r.status_code != 202]
    # Quorum queues apply the limit once it is exceeded: one message past it may get in.
    assert len(accepted) in (2, 3)
    assert codes[: len(accepted)] == accepted  # accepted until full, refused after
    assert {r.status_code for r in refused} == {503}
    assert {r.json["error"]["code"] for r in refused} == {"queue_full"}
    assert all(int(r.headers["retry-after"]) > 0 for r in refused)
    # Every 202 is in the queue, nothing of the 503s is.
    queued = await drain_queue(small, small.queue_name)
    assert sorted(str(m.message_id) for m in queued) == sorted(r.json["batch_id"] for r in accepted)
    # Once the queue drains, the API accepts again without a restart.
    async with conductor(small) as c:
        again = await c.simulate_post("/events", body=events(3), headers=JSON)
    assert again.status_code == 202


async def test_compression_ratio_limit_stops_bombs_that_fit_the_size_limit(
    settings: Settings,
) -> None:
    # 3 MB of padding inside one event: within EVENTS_MAX_BODY_BYTES (32 MiB), but it
    # compresses about 1000:1, far beyond the default limit of 200:1 (+1 MiB of slack).
    padded = orjson.dumps([new_event(properties={"pad": " " * 3_000_000})])
    ratio = settings.with_overrides(max_event_bytes=4_000_000)
    real = gzip.compress(events(200))
    headers = {**JSON, "Content-Encoding": "gzip"}
    async with conductor(ratio) as c:
        bomb = await c.simulate_post("/events", body=gzip.compress(padded), headers=headers)
        normal = await c.simulate_post("/events", body=real, headers=headers)
    assert bomb.status_code == 413
    assert bomb.json["error"]["code"] == "body_too_large"
    assert normal.status_code == 202
    assert normal.json["accepted"] == 200


async def test_a_slow_body_is_408_not_a_held_worker() -> None:
    async def trickle() -> AsyncIterator[bytes]:
        yield b'[{"event_id":'
        await asyncio.sleep(5)
        yield b"}]"

    started = asyncio.get_running_loop().time()
    with pytest.raises(Refusal) as info:
        await read_body(trickle(), None, 1_000_000, timeout=0.2)
    assert info.value.status == 408
    assert info.value.code == "request_timeout"
    assert asyncio.get_running_loop().time() - started < 2


# --- metrics -------------------------------------------------------------------------


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 if absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if found == labels:
            return float(m.group(3))
    return 0.0


async def depths_once_refreshed(
    c: testing.ASGIConductor, settings: Settings, expected: tuple[int, int]
) -> tuple[int, int]:
    """``queue_messages`` of the queue and the DLQ, scraped until they are ``expected``
    (the depths are re-read every QUEUE_DEPTHS_MAX_AGE seconds) or 10 s passed."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        text = (await c.simulate_get("/metrics")).text
        got = (
            int(sample(text, "queue_messages", queue=settings.queue_name)),
            int(sample(text, "queue_messages", queue=settings.dead_letter_queue_name)),
        )
        if got == expected or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.2)


async def test_metrics_count_what_happened(settings: Settings) -> None:
    async with conductor(settings) as c:
        before = (await c.simulate_get("/metrics")).text
        batch: list[Any] = [new_event() for _ in range(4)] + [{"event_id": "nope"}]
        await c.simulate_post("/events", body=orjson.dumps(batch), headers=JSON)
        await c.simulate_get("/nowhere")
        result = await c.simulate_get("/metrics")
        queued_depths = await depths_once_refreshed(c, settings, (1, 0))
    after = result.text
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("events_received_total", source="json") == 5
    assert delta("events_accepted_total") == 4
    assert delta("events_rejected_total", reason="invalid_uuid") == 1
    route = {"route": "/events", "method": "POST", "status": "202"}
    assert delta("http_request_duration_seconds_count", **route) == 1
    assert (
        delta("http_request_duration_seconds_count", route="unmatched", method="GET", status="404")
        == 1
    )
    assert delta("publish_duration_seconds_count") == 1
    # Queue depths are read at most every QUEUE_DEPTHS_MAX_AGE seconds: `after` may still
    # report the depths read by the scrape before the POST.
    assert queued_depths == (1, 0)


async def test_scrapes_open_no_channel_and_report_the_depths(settings: Settings) -> None:
    """50 concurrent scrapes open no broker channel (the depths are read on one channel kept
    for it, at most every QUEUE_DEPTHS_MAX_AGE seconds) and report what waits in the queue."""
    async with conductor(settings) as c:
        posted = [await c.simulate_post("/events", body=events(2), headers=JSON) for _ in range(3)]
        first = (await c.simulate_get("/metrics")).text
        scrapes = await asyncio.gather(*(c.simulate_get("/metrics") for _ in range(50)))
        last = (await c.simulate_get("/metrics")).text
        posted += [await c.simulate_post("/events", body=events(2), headers=JSON) for _ in range(2)]
        later = await depths_once_refreshed(c, settings, (5, 0))
        final = (await c.simulate_get("/metrics")).text
    assert [r.status_code for r in posted] == [202] * 5
    assert {r.status_code for r in scrapes} == {200}
    for text in [first, *(r.text for r in scrapes), last]:
        assert sample(text, "queue_messages", queue=settings.queue_name) == 3
        assert sample(text, "queue_messages", queue=settings.dead_letter_queue_name) == 0
    # The counter includes the channel the first scrape opened for the depths (if no earlier
    # test in this process did), never one per scrape.
    opened = sample(first, "broker_channels_opened_total")
    assert opened >= 2  # this app's publishing channel and its depths channel
    assert sample(last, "broker_channels_opened_total") == opened
    assert later == (5, 0)
    assert sample(final, "broker_channels_opened_total") == opened


class SilentBroker:
    """A TCP server that accepts AMQP clients and never answers: a broker that hangs."""

    def __init__(self) -> None:
        self.accepted = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def test_a_broker_that_hangs_does_not_hold_the_scrapes(settings: Settings) -> None:
    """While the broker does not answer, scrapes still answer (without queue depths), and
    all of them together wait on one attempt to reach it."""
    from service.runtime import Runtime

    broker = SilentBroker()
    async with broker as port:
        runtime = Runtime(
            settings.with_overrides(rabbitmq_url=f"amqp://guest:guest@127.0.0.1:{port}/%2F")
        )
        try:
            answers = await asyncio.gather(*(runtime.queue_depths() for _ in range(5)))
            again = await runtime.queue_depths()
            attempts = broker.accepted
        finally:
            await runtime.process_shutdown(None, None)
    assert answers == [{}] * 5
    assert again == {}
    assert attempts == 1


async def bucket_tokens(client: aioredis.Redis, settings: Settings, kind: str) -> float:
    from service.auth import key_id

    raw = await client.hget(f"{settings.queue_prefix}:rl:{kind}:{key_id(API_KEY)}", "tokens")
    return float(raw)


async def test_a_request_refused_by_one_bucket_costs_nothing_in_the_other(
    settings: Settings, redis_keys: aioredis.Redis
) -> None:
    both = settings.with_overrides(rate_limit=0.001, rate_burst=100, rate_limit_rpm=2)
    async with conductor(both) as c:
        codes = [
            (await c.simulate_post("/events", body=events(30), headers=JSON)) for _ in range(3)
        ]
    assert [r.status_code for r in codes] == [202, 202, 429]
    assert codes[2].headers["ratelimit-limit"] == "2"  # the requests bucket refused it
    assert round(await bucket_tokens(redis_keys, both, "events")) == 40  # 100 - 2 x 30


async def test_a_batch_the_broker_refuses_is_not_charged(
    settings: Settings, redis_keys: aioredis.Redis
) -> None:
    limited = settings.with_overrides(rate_limit=0.001, rate_burst=1000, queue_max_messages=1)
    async with conductor(limited) as c:
        answers = []
        for _ in range(4):
            answers.append(await c.simulate_post("/events", body=events(10), headers=JSON))
    accepted = [a for a in answers if a.status_code == 202]
    assert [a.status_code for a in answers[len(accepted) :]] == [503] * (4 - len(accepted))
    assert len(accepted) in (1, 2)
    # Only the accepted requests were charged: the 503s were given back.
    assert round(await bucket_tokens(redis_keys, limited, "events")) == 1000 - 10 * len(accepted)


async def test_the_in_flight_mark_outlasts_the_slowest_request(
    settings: Settings, redis_keys: aioredis.Redis
) -> None:
    from service.runtime import Runtime

    patient = settings.with_overrides(wait_timeout_max=600.0)
    runtime = Runtime(patient)
    try:
        claim = await runtime.idempotency.begin("key_x", "k-1", "fingerprint")
        ttl = await redis_keys.ttl(claim.redis_key)
    finally:
        await runtime.redis.aclose()
    slowest = patient.client_timeout + patient.publish_timeout + patient.wait_timeout_max
    assert ttl > slowest
