"""The HTTP contract, with the app running against the real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import gzip
import uuid
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
import zstandard
from falcon import testing

from core.config import Settings
from core.errors import ConfigError
from pipeline.message import CONTENT_TYPE, MESSAGE_TYPE, decode_message
from service.app import create_app
from tests.conftest import API_KEY, drain_queue, new_event, running_worker

JSON_HEADERS = {"Content-Type": "application/json"}


def body(events: list[Any]) -> bytes:
    return orjson.dumps(events)


async def queued(settings: Settings) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message waiting on the main queue (taken off it)."""
    return await drain_queue(settings, settings.queue_name)


async def test_accepted_batch_is_one_persistent_arrow_message(
    client: testing.ASGIConductor, settings: Settings
) -> None:
    events = [new_event(user_id=i) for i in range(3)]
    result = await client.simulate_post("/events", body=body(events), headers=JSON_HEADERS)
    assert result.status_code == 202
    answer = result.json
    assert answer["received"] == 3 and answer["accepted"] == 3 and answer["rejected"] == []
    batch_id = uuid.UUID(answer["batch_id"])
    messages = await queued(settings)
    assert len(messages) == 1
    m = messages[0]
    assert m.content_type == CONTENT_TYPE
    assert m.type == MESSAGE_TYPE
    assert m.message_id == str(batch_id)
    assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert m.headers["x-events"] == 3
    decoded = decode_message(m.body)
    assert decoded.meta.batch_id == batch_id
    assert decoded.meta.key_id.startswith("key_") and API_KEY not in decoded.meta.key_id
    assert [uuid.UUID(bytes=b) for b in decoded.table.column("event_id").to_pylist()] == [
        uuid.UUID(e["event_id"]) for e in events
    ]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": API_KEY},
        {"x-api-key": API_KEY},
        {"Authorization": f"Bearer {API_KEY}"},
        {"authorization": f"bearer {API_KEY}"},
    ],
    ids=["x-api-key", "lowercase-header", "bearer", "lowercase-bearer"],
)
async def test_auth_accepts_both_header_forms(settings: Settings, headers: dict[str, str]) -> None:
    async with testing.ASGIConductor(create_app(settings)) as c:
        result = await c.simulate_post(
            "/events", body=body([new_event()]), headers={**JSON_HEADERS, **headers}
        )
    assert result.status_code == 202


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {API_KEY}"},
    ],
    ids=["none", "wrong-key", "wrong-bearer", "basic-scheme"],
)
async def test_auth_refuses(settings: Settings, headers: dict[str, str]) -> None:
    async with testing.ASGIConductor(create_app(settings)) as c:
        result = await c.simulate_post(
            "/events", body=body([new_event()]), headers={**JSON_HEADERS, **headers}
        )
        health = await c.simulate_get("/healthz")
    assert result.status_code == 401
    assert result.json["error"]["code"] == "unauthorized"
    assert health.status_code == 200  # probes need no key
    assert await queued(settings) == []


def test_no_key_configured_refuses_to_start(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="API_KEY"):
        create_app(settings.with_overrides(api_key="", api_keys_list=()))


async def test_explicit_opt_out_runs_without_keys(settings: Settings) -> None:
    open_settings = settings.with_overrides(api_key="", api_keys_list=(), allow_no_auth=True)
    async with testing.ASGIConductor(create_app(open_settings)) as c:
        result = await c.simulate_post("/events", body=body([new_event()]), headers=JSON_HEADERS)
    assert result.status_code == 202
    assert decode_message((await queued(settings))[0].body).meta.key_id == "anonymous"


async def test_trailing_slash_is_the_same_route(client: testing.ASGIConductor) -> None:
    result = await client.simulate_post("/events/", body=body([new_event()]), headers=JSON_HEADERS)
    assert result.status_code == 202


async def test_partly_invalid_batch_keeps_the_valid_events(
    client: testing.ASGIConductor, settings: Settings
) -> None:
    good = new_event()
    result = await client.simulate_post(
        "/events", body=body([new_event(event_id="nope"), good, 7]), headers=JSON_HEADERS
    )
    assert result.status_code == 202
    answer = result.json
    assert (answer["received"], answer["accepted"]) == (3, 1)
    assert [(r["index"], r["event_id"], r["field"], r["code"]) for r in answer["rejected"]] == [
        (0, "nope", "event_id", "invalid_uuid"),
        (2, None, None, "not_an_object"),
    ]
    decoded = decode_message((await queued(settings))[0].body)
    assert decoded.rows == 1


async def test_all_invalid_is_400_with_the_same_body_and_nothing_queued(
    client: testing.ASGIConductor, settings: Settings
) -> None:
    result = await client.simulate_post(
        "/events", body=body([new_event(user_id="")]), headers=JSON_HEADERS
    )
    assert result.status_code == 400
    answer = result.json
    assert answer["batch_id"] is None
    assert (answer["received"], answer["accepted"]) == (1, 0)
    assert answer["rejected"][0]["code"] == "empty"
    assert answer["error"]["code"] == "no_valid_events"
    assert await queued(settings) == []


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
async def test_compressed_bodies(client: testing.ASGIConductor, coding: str) -> None:
    raw = body([new_event() for _ in range(50)])
    packed = gzip.compress(raw) if coding == "gzip" else zstandard.ZstdCompressor().compress(raw)
    result = await client.simulate_post(
        "/events", body=packed, headers={**JSON_HEADERS, "Content-Encoding": coding}
    )
    assert result.status_code == 202
    assert result.json["accepted"] == 50


async def test_limits_and_media_errors(settings: Settings) -> None:
    small = settings.with_overrides(max_body_bytes=2000, max_events_per_request=5)
    async with testing.ASGIConductor(create_app(small), headers={"X-API-Key": API_KEY}) as c:
        too_big = await c.simulate_post(
            "/events", body=b"[" + b" " * 3000 + b"]", headers=JSON_HEADERS
        )
        bomb = await c.simulate_post(
            "/events",
            body=gzip.compress(b" " * 100_000),
            headers={**JSON_HEADERS, "Content-Encoding": "gzip"},
        )
        too_many = await c.simulate_post(
            "/events", body=body([new_event()] * 6), headers=JSON_HEADERS
        )
        media = await c.simulate_post("/events", body=b"a,b", headers={"Content-Type": "text/csv"})
        encoding = await c.simulate_post(
            "/events", body=b"[]", headers={**JSON_HEADERS, "Content-Encoding": "br"}
        )
        bad_json = await c.simulate_post("/events", body=b"[{", headers=JSON_HEADERS)
        bad_wait = await c.simulate_post(
            "/events?wait=maybe", body=body([new_event()]), headers=JSON_HEADERS
        )
    assert (too_big.status_code, too_big.json["error"]["code"]) == (413, "body_too_large")
    assert (bomb.status_code, bomb.json["error"]["code"]) == (413, "body_too_large")
    assert (too_many.status_code, too_many.json["error"]["code"]) == (413, "too_many_events")
    assert (media.status_code, media.json["error"]["code"]) == (415, "unsupported_media_type")
    assert (encoding.status_code, encoding.json["error"]["code"]) == (415, "unsupported_encoding")
    assert (bad_json.status_code, bad_json.json["error"]["code"]) == (400, "invalid_json")
    assert (bad_wait.status_code, bad_wait.json["error"]["code"]) == (400, "invalid_parameter")
    assert await queued(settings) == []


async def test_unknown_route_and_method_answer_json_errors(client: testing.ASGIConductor) -> None:
    missing = await client.simulate_get("/nope")
    wrong = await client.simulate_get("/events")
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "not_found")
    assert (wrong.status_code, wrong.json["error"]["code"]) == (405, "method_not_allowed")
    assert "POST" in wrong.headers["allow"]


async def test_request_id_is_echoed_or_assigned(client: testing.ASGIConductor) -> None:
    given = await client.simulate_get("/healthz", headers={"X-Request-ID": "abc-123"})
    assigned = await client.simulate_get("/healthz")
    assert given.headers["x-request-id"] == "abc-123"
    assert len(assigned.headers["x-request-id"]) == 32


async def test_wait_true_answers_200_after_commit_with_counts(
    client: testing.ASGIConductor, settings: Settings, db: asyncpg.Connection
) -> None:
    events = [new_event() for _ in range(20)]
    async with running_worker(settings):
        first = await client.simulate_post(
            "/events?wait=true", body=body(events), headers=JSON_HEADERS
        )
        again = await client.simulate_post(
            "/events?wait=true", body=body(events + events[:1]), headers=JSON_HEADERS
        )
    assert first.status_code == 200
    assert (first.json["committed"], first.json["inserted"], first.json["duplicates"]) == (
        True,
        20,
        0,
    )
    assert again.status_code == 200
    assert (again.json["inserted"], again.json["duplicates"]) == (0, 21)
    assert await db.fetchval("SELECT count(*) FROM events") == 20


async def test_wait_times_out_with_202_when_no_worker_runs(client: testing.ASGIConductor) -> None:
    result = await client.simulate_post(
        "/events?wait=true&timeout=0.3", body=body([new_event()]), headers=JSON_HEADERS
    )
    assert result.status_code == 202
    assert result.json["committed"] is False
    assert "inserted" not in result.json


async def test_broker_unreachable_is_503_with_retry_after(settings: Settings) -> None:
    down = settings.with_overrides(rabbitmq_url="amqp://guest:guest@127.0.0.1:1/%2F")
    async with testing.ASGIConductor(create_app(down), headers={"X-API-Key": API_KEY}) as c:
        result = await c.simulate_post("/events", body=body([new_event()]), headers=JSON_HEADERS)
        ready = await c.simulate_get("/readyz")
    assert result.status_code == 503
    assert result.json["error"]["code"] == "broker_unavailable"
    assert int(result.headers["retry-after"]) > 0
    assert ready.status_code == 503
    assert ready.json["checks"] == {
        "postgres": "ok",
        "rabbitmq": "unreachable",
        "redis": "ok",
    }


async def test_readyz(client: testing.ASGIConductor, settings: Settings) -> None:
    ok = await client.simulate_get("/readyz")
    assert ok.status_code == 200
    assert ok.json == {
        "status": "ready",
        "checks": {"postgres": "ok", "rabbitmq": "ok", "redis": "ok"},
    }
    no_db = settings.with_overrides(database_url="postgresql://postgres@127.0.0.1:1/none")
    async with testing.ASGIConductor(create_app(no_db)) as c:
        bad = await c.simulate_get("/readyz")
    assert bad.status_code == 503
    assert bad.json["checks"] == {
        "postgres": "unreachable",
        "rabbitmq": "ok",
        "redis": "ok",
    }
