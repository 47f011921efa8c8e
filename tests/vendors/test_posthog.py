"""PostHog's official Python SDK, unchanged but for the host, against the real service."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from posthog import Posthog

from tests.vendors.conftest import INGEST_KEY, READ_KEY, FaultProxy, Service, stored, vendor_uuid

T0 = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)


def _client(host: str, key: str = INGEST_KEY, **options: Any) -> tuple[Posthog, list[Any]]:
    errors: list[Any] = []
    client = Posthog(
        key,
        host=host,
        on_error=lambda error, batch: errors.append(error),
        flush_interval=0.05,
        max_retries=3,
        **options,
    )
    return client, errors


def _capture(host: str, n: int, **options: Any) -> tuple[list[str], list[Any]]:
    client, errors = _client(host, **options)
    ids = [
        client.capture(
            "Movie Played",
            distinct_id=f"p{i % 3}",
            properties={"title": f"film {i}", "minutes": i},
            timestamp=T0 + timedelta(seconds=i),
        )
        for i in range(n)
    ]
    client.flush()
    client.shutdown()
    return [str(i) for i in ids], errors


async def test_captured_events_are_stored_once_with_the_documented_mapping(
    service: Service, db: asyncpg.Connection
) -> None:
    ids, errors = await asyncio.to_thread(_capture, service.base, 25, gzip=True)
    assert errors == []
    rows = await stored(db, 25)
    assert sorted(r["event_id"] for r in rows) == sorted(ids)
    for i, r in enumerate(rows):  # ordered by occurred_at
        assert r["event_type"] == "Movie Played"
        assert r["user_id"] == f"p{i % 3}"
        assert r["occurred_at"] == T0 + timedelta(seconds=i)
        assert r["properties"]["title"] == f"film {i}" and r["properties"]["minutes"] == i
        assert r["properties"]["$lib"] == "posthog-python"  # PostHog keeps its own there


async def test_person_calls_are_stored_under_posthogs_own_event_names(
    service: Service, db: asyncpg.Connection
) -> None:
    def send() -> list[Any]:
        client, errors = _client(service.base)
        client.set(distinct_id="p1", properties={"plan": "team"})
        client.alias(previous_id="anon-7", distinct_id="p1")
        client.flush()
        client.shutdown()
        return errors

    assert await asyncio.to_thread(send) == []
    rows = {r["event_type"]: r for r in await stored(db, 2)}
    assert set(rows) == {"$set", "$create_alias"}
    assert rows["$set"]["user_id"] == "p1"
    assert rows["$set"]["properties"]["$set"] == {"plan": "team"}
    # PostHog's SDK sends an alias as the previous id's event naming the new one.
    assert rows["$create_alias"]["user_id"] == "anon-7"
    assert rows["$create_alias"]["properties"]["alias"] == "p1"


async def test_a_retry_after_a_lost_answer_stores_nothing_twice(
    proxy: FaultProxy, db: asyncpg.Connection
) -> None:
    ids, errors = await asyncio.to_thread(_capture, proxy.base, 10)
    assert errors == []
    assert proxy.answers[0] == ("/batch/", 503, 200)
    assert ("/batch/", 200, 200) in proxy.answers[1:]
    rows = await stored(db, 10)
    assert sorted(r["event_id"] for r in rows) == sorted(ids)


async def test_unknown_and_read_only_keys_are_refused_and_not_retried(
    service: Service, db: asyncpg.Connection
) -> None:
    for key, status in (("phc_not_a_key", 401), (READ_KEY, 403)):
        client, errors = _client(service.base, key=key)
        await asyncio.to_thread(client.capture, "x", distinct_id="p")
        await asyncio.to_thread(client.flush)
        await asyncio.to_thread(client.shutdown)
        assert [e.status for e in errors] == [status]
    assert await db.fetchval("SELECT count(*) FROM events WHERE event_type = 'x'") == 0


async def test_the_capture_routes_take_one_event_an_array_or_a_batch(
    service: Service, db: asyncpg.Connection
) -> None:
    # What posthog-js and other clients send to /capture/, /e/ and /i/v0/e/ (no SDK of
    # ours drives these paths: the Python SDK posts to /batch/ only).
    at = T0.isoformat()
    one = {"api_key": INGEST_KEY, "event": "a", "distinct_id": "d", "timestamp": at}
    array = [{"event": "b", "distinct_id": "d", "properties": {"token": INGEST_KEY}}]
    batch = {"token": INGEST_KEY, "batch": [{"event": "c", "distinct_id": "d", "uuid": "e-1"}]}
    async with httpx.AsyncClient(base_url=service.base) as http:
        for path, body in (("/capture/", one), ("/e/", array), ("/i/v0/e/", batch)):
            answer = await http.post(path, json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == 1
        refused = await http.post("/e/", json={"event": "d", "distinct_id": "d"})
        assert refused.status_code == 401
        assert refused.json()["type"] == "authentication_error"
        assert refused.json()["code"] == "unauthorized"
    rows = {r["event_type"]: r for r in await stored(db, 3)}
    assert set(rows) == {"a", "b", "c"}
    assert rows["a"]["occurred_at"] == T0
    assert rows["c"]["event_id"] == vendor_uuid("posthog", "e-1")
    # The key the body carried is never stored.
    assert all("token" not in r["properties"] for r in rows.values())
    assert INGEST_KEY not in str(rows)
