"""Segment's and RudderStack's official Python SDKs, unchanged but for the host, against the
real service: every call type stored once, with the documented mapping; retries after a
lost answer or a real 503 store nothing twice; a key without the ingest scope is refused
and dropped."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from core.config import Settings
from tests.services import free_port, start_api, start_worker, wait_ready
from tests.vendors.conftest import (
    INGEST_KEY,
    READ_KEY,
    FaultProxy,
    Service,
    stored,
    vendor_uuid,
)

T0 = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)


def _client(host: str, key: str = INGEST_KEY, **options: Any) -> tuple[SegmentClient, list[Any]]:
    errors: list[Any] = []
    client = SegmentClient(
        write_key=key,
        host=host,
        on_error=lambda error, batch: errors.append(error),
        upload_interval=0.05,
        max_retries=3,
        **options,
    )
    return client, errors


def _send_every_call(host: str) -> tuple[list[dict[str, Any]], list[Any]]:
    client, errors = _client(host, gzip=True)
    sent = []
    for i in range(20):
        _, msg = client.track(
            user_id=f"user-{i % 4}",
            event="Order Completed",
            properties={"order": i, "plan": "pro"},
            context={"app": {"version": "1.2"}},
            timestamp=T0 + timedelta(seconds=i),
        )
        sent.append(msg)
    at = T0 + timedelta(minutes=5)
    sent.append(client.identify(user_id="user-1", traits={"email": "a@b.c"}, timestamp=at)[1])
    sent.append(
        client.page(
            user_id="user-2",
            category="Docs",
            name="Pricing",
            properties={"url": "https://x.test/pricing"},
            timestamp=at + timedelta(seconds=1),
        )[1]
    )
    sent.append(
        client.screen(user_id="user-2", name="Home", timestamp=at + timedelta(seconds=2))[1]
    )
    sent.append(
        client.group(
            user_id="user-3",
            group_id="acme",
            traits={"seats": 5},
            timestamp=at + timedelta(seconds=3),
        )[1]
    )
    sent.append(
        client.alias(previous_id="anon-1", user_id="user-3", timestamp=at + timedelta(seconds=4))[1]
    )
    sent.append(
        client.track(
            anonymous_id="anon-9",
            event="Viewed",
            message_id="order-88231-viewed",  # not a UUID
            timestamp=at + timedelta(seconds=5),
        )[1]
    )
    client.flush()
    client.shutdown()
    return sent, errors


async def test_every_segment_call_is_stored_once_with_the_documented_mapping(
    service: Service, db: asyncpg.Connection
) -> None:
    sent, errors = await asyncio.to_thread(_send_every_call, service.base)
    assert errors == []
    rows = await stored(db, len(sent))
    assert len(rows) == 26
    by_id = {r["event_id"]: r for r in rows}

    def row(msg: dict[str, Any]) -> dict[str, Any]:
        mid = msg["messageId"]
        key = vendor_uuid("segment", mid) if mid == "order-88231-viewed" else str(uuid.UUID(mid))
        return by_id[key]

    for i, msg in enumerate(sent[:20]):
        r = row(msg)
        assert r["event_type"] == "Order Completed"
        assert r["user_id"] == f"user-{i % 4}"
        assert r["occurred_at"] == T0 + timedelta(seconds=i)
        assert r["properties"]["order"] == i and r["properties"]["plan"] == "pro"
        assert r["properties"]["$context"]["app"] == {"version": "1.2"}
        assert r["properties"]["$context"]["library"]["name"] == "analytics-python"
    identify, page, screen, group, alias, anonymous = (row(m) for m in sent[20:])
    assert identify["event_type"] == "$identify" and identify["user_id"] == "user-1"
    assert identify["properties"]["$traits"] == {"email": "a@b.c"}
    assert page["event_type"] == "$pageview"
    assert page["properties"]["$name"] == "Pricing" and page["properties"]["$category"] == "Docs"
    assert page["properties"]["url"] == "https://x.test/pricing"
    assert screen["event_type"] == "$screen" and screen["properties"]["$name"] == "Home"
    assert group["event_type"] == "$group" and group["properties"]["$group_id"] == "acme"
    assert group["properties"]["$traits"] == {"seats": 5}
    assert alias["event_type"] == "$alias" and alias["user_id"] == "user-3"
    assert alias["properties"]["$previous_id"] == "anon-1"
    assert anonymous["user_id"] == "anon-9" and anonymous["event_type"] == "Viewed"
    assert anonymous["occurred_at"] == T0 + timedelta(minutes=5, seconds=5)

    # The same SDK calls again (an app resending its queue): nothing new is stored.
    resent = await asyncio.to_thread(_resend, service.base, sent)
    assert resent == []
    assert len(await stored(db, 26)) == 26


def _resend(host: str, sent: list[dict[str, Any]]) -> list[Any]:
    client, errors = _client(host)
    for msg in sent:
        client.queue.put(msg)
    client.flush()
    client.shutdown()
    return errors


def _track(host: str, n: int, **options: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    client, errors = _client(host, **options)
    sent = [
        client.track(
            user_id=f"u{i}",
            event="Clicked",
            properties={"i": i},
            timestamp=T0 + timedelta(seconds=i),
        )[1]
        for i in range(n)
    ]
    client.flush()
    client.shutdown()
    return sent, errors


async def test_a_retry_after_a_lost_answer_stores_nothing_twice(
    proxy: FaultProxy, db: asyncpg.Connection
) -> None:
    sent, errors = await asyncio.to_thread(_track, proxy.base, 12)
    assert errors == []
    # The first upload reached the service (200) but the SDK saw a 503 and sent it again.
    assert proxy.answers[0] == ("/v1/batch", 503, 200)
    assert ("/v1/batch", 200, 200) in proxy.answers[1:]
    rows = await stored(db, 12)
    assert sorted(r["event_id"] for r in rows) == sorted(m["messageId"] for m in sent)


async def test_a_key_without_the_ingest_scope_or_an_unknown_key_is_refused_and_dropped(
    service: Service, db: asyncpg.Connection
) -> None:
    def send(key: str) -> list[Any]:
        client, errors = _client(service.base, key=key)
        client.track(user_id="u", event="Clicked")
        client.flush()
        client.shutdown()
        return errors

    # Not retried (a 4xx with code and message): one error each, from one request.
    errors = await asyncio.to_thread(send, READ_KEY)
    assert [(e.status, e.code) for e in errors] == [(403, "insufficient_scope")]
    errors = await asyncio.to_thread(send, "not-a-key")
    assert [(e.status, e.code) for e in errors] == [(401, "unauthorized")]
    assert await db.fetchval("SELECT count(*) FROM events") == 0


def _rudder(
    host: str, batches: list[list[int]], between: Any = None
) -> tuple[list[str], list[Any]]:
    errors: list[Any] = []
    client = RudderClient(
        write_key=INGEST_KEY,
        host=host,
        on_error=lambda error, batch: errors.append(error),
        upload_interval=0.05,
        max_retries=6,
    )
    ids = []
    for n, batch in enumerate(batches):
        for i in batch:
            _, msg = client.track(
                user_id=f"r{i}",
                event="Song Played",
                properties={"i": i},
                timestamp=T0 + timedelta(seconds=i),
            )
            ids.append(msg["messageId"])
        client.flush()
        if between is not None and n == len(batches) - 2:
            between()
    client.shutdown()
    return ids, errors


async def test_rudderstack_gzipped_batches_are_stored_once(
    service: Service, db: asyncpg.Connection
) -> None:
    ids, errors = await asyncio.to_thread(_rudder, service.base, [list(range(30))])
    assert errors == []
    rows = await stored(db, 30)
    assert sorted(r["event_id"] for r in rows) == sorted(ids)
    assert {r["event_type"] for r in rows} == {"Song Played"}
    assert sorted(r["properties"]["i"] for r in rows) == list(range(30))
    assert all(r["properties"]["$context"]["library"]["name"] for r in rows)


async def test_rudderstack_retries_a_real_503_and_stores_every_event_once(
    settings: Settings, tmp_path: Any, db: asyncpg.Connection
) -> None:
    # The queue holds one message and no worker runs: the first batches fill it (a quorum
    # queue lets one past the limit), the last is refused 503 queue_full; a worker started
    # then drains it, and the SDK's retry of the last batch is accepted.
    port = free_port()
    log = tmp_path / "api.log"
    api = start_api(
        settings,
        log,
        port,
        workers=1,
        API_KEYS=f"{INGEST_KEY}:ingest",
        EVENTS_QUEUE_MAX_MESSAGES="1",
    )
    base = f"http://127.0.0.1:{port}"
    workers = []
    try:
        await wait_ready(base)

        def start_draining() -> None:
            threading.Timer(
                1.0, lambda: workers.append(start_worker(settings, tmp_path / "worker.log"))
            ).start()

        ids, errors = await asyncio.to_thread(
            _rudder, base, [list(range(5)), list(range(5, 10)), list(range(10, 15))], start_draining
        )
        assert errors == []
        rows = await stored(db, 15)
        assert sorted(r["event_id"] for r in rows) == sorted(ids)
    finally:
        assert api.stop() == 0
        for w in workers:
            assert w.stop() == 0
    lines = [orjson.loads(line) for line in log.read_text().splitlines()]
    answers = [r["status"] for r in lines if r.get("msg") == "request" and r["method"] == "POST"]
    # Accepted until full, refused (retried by the SDK with backoff), accepted once drained.
    assert answers[:2] == [200, 200] and 503 in answers and answers[-1] == 200, answers
    assert set(answers) == {200, 503}
