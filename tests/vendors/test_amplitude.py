"""Amplitude's official Python SDK, unchanged but for the server URL, against the real
service: HTTP V2 and Batch, the 400 that lists invalid events (the SDK drops those and sends
the rest again: stored once), an unknown key, and a retry after a lost answer."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from amplitude import Amplitude, BaseEvent, Config

from tests.vendors.conftest import INGEST_KEY, FaultProxy, Service, stored, vendor_uuid

T0 = (datetime.now(UTC) - timedelta(hours=5)).replace(microsecond=0)
T0_MS = int(T0.timestamp() * 1000)


class Sent:
    """The SDK's callbacks: (insert_id, code, message) per event."""

    def __init__(self) -> None:
        self.results: list[tuple[str | None, int, str | None]] = []

    def __call__(self, event: BaseEvent, code: int, message: str | None = None) -> None:
        self.results.append((event.insert_id, code, message))


def _send(
    url: str,
    events: list[BaseEvent],
    key: str = INGEST_KEY,
    done: Callable[[], bool] | None = None,
    **options: Any,
) -> Sent:
    sent = Sent()
    client = Amplitude(
        key, Config(server_url=url, flush_interval_millis=50, callback=sent, **options)
    )
    for e in events:
        client.track(e)
    # Until every event has had its outcome: a resend (after a 400 or a 5xx) comes from the
    # SDK's retry queue, after the flush.
    deadline = time.monotonic() + 30
    while {r[0] for r in sent.results} != {e.insert_id for e in events}:
        if time.monotonic() > deadline or (done is not None and done()):
            break
        client.flush()
        time.sleep(0.05)
    client.shutdown()
    return sent


def _events(n: int, **fields: Any) -> list[BaseEvent]:
    return [
        BaseEvent(
            event_type="Song Played",
            user_id=f"amp-user-{i % 3}",
            device_id=f"device-{i}",
            time=T0_MS + i * 1000,
            event_properties={"song": i},
            user_properties={"tier": "gold"},
            platform="iOS",
            **fields,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("path", ["/2/httpapi", "/batch"])
async def test_events_are_stored_once_with_the_documented_mapping(
    service: Service, db: asyncpg.Connection, path: str
) -> None:
    events = _events(12)
    sent = await asyncio.to_thread(_send, service.base + path, events, use_batch=path == "/batch")
    assert sorted(code for _, code, _ in sent.results) == [200] * 12
    rows = await stored(db, 12)
    # The SDK gives each event a UUID insert_id: the event's id.
    assert sorted(r["event_id"] for r in rows) == sorted(
        str(uuid.UUID(e.insert_id)) for e in events
    )
    for i, r in enumerate(rows):
        assert r["event_type"] == "Song Played"
        assert r["user_id"] == f"amp-user-{i % 3}"
        assert r["occurred_at"] == T0 + timedelta(seconds=i)
        assert r["properties"]["song"] == i
        assert r["properties"]["$user_properties"] == {"tier": "gold"}
        assert r["properties"]["$device_id"] == f"device-{i}"
        assert r["properties"]["$context"]["platform"] == "iOS"
        assert r["properties"]["$context"]["library"].startswith("amplitude-python/")


async def test_a_400_lists_the_invalid_events_and_the_resend_of_the_rest_stores_nothing_twice(
    service: Service, db: asyncpg.Connection
) -> None:
    events = _events(4)
    events[1].event_type = "x" * 500  # longer than EVENTS_MAX_EVENT_TYPE_LENGTH
    events[3].time = int((time.time() + 86_400) * 1000)  # a day ahead
    sent = await asyncio.to_thread(_send, service.base + "/2/httpapi", events)
    codes = {insert_id: code for insert_id, code, _ in sent.results}
    # The two invalid events come back to the app as 400s; the valid two were stored (and
    # the SDK's resend of them was a no-op), each once.
    assert codes == {
        events[0].insert_id: 200,
        events[1].insert_id: 400,
        events[2].insert_id: 200,
        events[3].insert_id: 400,
    }
    rows = await stored(db, 2)
    assert sorted(r["event_id"] for r in rows) == sorted([events[0].insert_id, events[2].insert_id])


async def test_an_unknown_key_is_a_400_invalid_api_key_on_which_the_sdk_stops(
    service: Service, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="amplitude"):
        await asyncio.to_thread(
            _send,
            service.base + "/2/httpapi",
            _events(2),
            key="bad-key",
            done=lambda: "Invalid API Key" in caplog.text,
        )
    assert "Invalid API Key" in caplog.text
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_a_retry_after_a_lost_answer_stores_nothing_twice(
    proxy: FaultProxy, db: asyncpg.Connection
) -> None:
    events = _events(6, insert_id=None)
    for i, e in enumerate(events):
        e.insert_id = f"song-{i}"  # not UUIDs: UUIDv5 of "amplitude" and the id
    sent = await asyncio.to_thread(_send, proxy.base + "/2/httpapi", events)
    assert sorted(code for _, code, _ in sent.results) == [200] * 6
    assert proxy.answers[0] == ("/2/httpapi", 503, 200)
    rows = await stored(db, 6)
    assert sorted(r["event_id"] for r in rows) == sorted(
        vendor_uuid("amplitude", f"song-{i}") for i in range(6)
    )
