"""The vendors' routes under hostile input: every refusal is a structured 4xx in the
vendor's own form, bounded before events are built; a key in the body is checked before the
body is decoded; nothing valid is lost for an invalid neighbour."""

from __future__ import annotations

import base64
import gzip
import uuid
from typing import Any

import orjson
import pytest
from falcon import testing

from core.config import Settings
from service.app import create_app
from tests.conftest import API_KEY, drain_queue
from tests.vendors.conftest import INGEST_KEY, READ_KEY

JSON = {"Content-Type": "application/json"}


def conductor(settings: Settings) -> testing.ASGIConductor:
    keys = settings.with_overrides(api_keys_list=(f"{INGEST_KEY}:ingest", f"{READ_KEY}:read"))
    return testing.ASGIConductor(create_app(keys))


def basic(key: str) -> dict[str, str]:
    return {**JSON, "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def segment_batch(n: int, **extra: Any) -> bytes:
    batch = [
        {"type": "track", "event": "e", "userId": f"u{i}", "messageId": str(uuid.uuid4())}
        for i in range(n)
    ]
    return orjson.dumps({"batch": batch, **extra})


async def test_a_body_key_that_is_unknown_is_refused_before_the_body_is_decoded(
    settings: Settings,
) -> None:
    # More events than a request may hold, and an unknown key at the top: the key is looked
    # up first (a pass that builds nothing else), so the answer is the key's 401, not the
    # 413 that counting the events would give. With the right key: the 413.
    many = settings.max_events_per_request + 1
    events = [{"event": "e", "distinct_id": "d"}] * many
    async with conductor(settings) as c:
        wrong = await c.simulate_post(
            "/batch/", body=orjson.dumps({"api_key": "nope", "batch": events}), headers=JSON
        )
        right = await c.simulate_post(
            "/batch/", body=orjson.dumps({"api_key": INGEST_KEY, "batch": events}), headers=JSON
        )
    assert wrong.status_code == 401
    assert wrong.json["type"] == "authentication_error" and wrong.json["code"] == "unauthorized"
    assert right.status_code == 413 and right.json["code"] == "too_many_events"
    assert "nope" not in wrong.text


_DEEP_KEYED = b'{"api_key": "KEY", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
_DEEP = b"[" * 100_000 + b"]" * 100_000
HOSTILE = [
    # Segment: gzip bomb; too many events; not JSON; deeply nested; not UTF-8; no events.
    pytest.param("/v1/batch", "bomb", (413, "code", "body_too_large"), id="gzip-bomb"),
    pytest.param("/v1/batch", "many", (413, "code", "too_many_events"), id="too-many"),
    pytest.param("/v1/batch", b"{not json", (400, "code", "invalid_json"), id="not-json"),
    pytest.param(
        "/v1/batch", b'{"batch": {"a": 1}}', (400, "code", "invalid_body"), id="batch-object"
    ),
    pytest.param("/v1/batch", _DEEP, (400, "code", "invalid_json"), id="deep"),
    pytest.param("/v1/batch", b"\xff\xfe{}", (400, "code", "invalid_json"), id="not-utf8"),
    pytest.param("/v1/batch", b'{"batch": []}', (400, "code", "empty_batch"), id="empty"),
    # Amplitude's form: `code` is the status, `error` the message.
    pytest.param(
        "/2/httpapi",
        b'{"api_key": "KEY", "events": 3}',
        (400, "error_code", "invalid_body"),
        id="amplitude-events-not-array",
    ),
    pytest.param(
        "/2/httpapi",
        b'{"api_key": "nope", "events": []}',
        (400, "error_code", "unauthorized"),
        id="amplitude-unknown-key",
    ),
    # PostHog: a body key nested deeper than the key pass goes is refused by the decoder.
    pytest.param("/e/", _DEEP_KEYED, (400, "code", "invalid_json"), id="posthog-deep"),
]


@pytest.mark.parametrize(("path", "body", "expected"), HOSTILE)
async def test_hostile_bodies_get_the_vendors_structured_4xx(
    settings: Settings, path: str, body: Any, expected: tuple[int, str, str]
) -> None:
    status, field, value = expected
    headers = basic(INGEST_KEY)
    if body == "bomb":
        body = gzip.compress(b" " * (settings.max_body_bytes + 1))
        headers = {**headers, "Content-Encoding": "gzip"}
    elif body == "many":
        body = segment_batch(settings.max_events_per_request + 1)
    elif path != "/v1/batch":
        body = body.replace(b"KEY", INGEST_KEY.encode())
        headers = JSON
    async with conductor(settings) as c:
        answer = await c.simulate_post(path, body=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json[field] == value
    if path.startswith("/2/"):
        assert answer.json["code"] == status and answer.json["error"]
    assert "Traceback" not in answer.text


async def test_one_bad_message_refuses_only_itself_and_its_neighbours_are_published(
    settings: Settings,
) -> None:
    good = {"type": "track", "event": "ok", "userId": "u", "messageId": str(uuid.uuid4())}
    body = {
        "batch": [
            good,
            {"type": "track", "event": "", "userId": "u"},  # blank event name
            {"type": "teleport", "userId": "u"},  # no such call
            "not an object",
            {"type": "track", "event": "x", "userId": "u", "timestamp": "yesterday"},
        ]
    }
    async with conductor(settings) as c:
        answer = await c.simulate_post("/v1/batch", json=body, headers=basic(INGEST_KEY))
    assert answer.status_code == 200 and answer.json["success"] is True
    assert answer.json["accepted"] == 1 and answer.json["received"] == 5
    refused = {(r["index"], r["field"], r["code"]) for r in answer.json["rejected"]}
    assert refused == {
        (1, "event_type", "empty"),
        (2, None, "invalid_type"),
        (3, None, "not_an_object"),
        (4, "occurred_at", "invalid_timestamp"),
    }
    queued = await drain_queue(settings, settings.queue_name)
    assert [m.message_id for m in queued] == [answer.json["batch_id"]]


async def test_amplitude_partial_refusal_is_its_400_listing_events_by_its_own_field_names(
    settings: Settings,
) -> None:
    events = [
        {"event_type": "ok", "user_id": "user-1", "time": 1_700_000_000_000},
        {"user_id": "user-1"},  # no event_type
        {"event_type": "t", "device_id": "d-1", "time": "soon"},
        {"event_type": "t"},  # neither user_id nor device_id
    ]
    async with conductor(settings) as c:
        answer = await c.simulate_post(
            "/2/httpapi", json={"api_key": INGEST_KEY, "events": events}, headers=JSON
        )
    assert answer.status_code == 400
    assert answer.json["code"] == 400
    assert answer.json["events_with_missing_fields"] == {"event_type": [1], "user_id": [3]}
    assert answer.json["events_with_invalid_fields"] == {"time": [2]}
    assert answer.json["accepted"] == 1  # stored; the SDK's resend of it is a no-op
    assert len(await drain_queue(settings, settings.queue_name)) == 1


async def test_vendor_routes_take_idempotency_keys_rate_limits_and_media_rules(
    settings: Settings,
) -> None:
    limited = settings.with_overrides(rate_limit=0.001, rate_burst=5)
    body = segment_batch(3)
    headers = {**basic(INGEST_KEY), "Idempotency-Key": "seg-" + uuid.uuid4().hex}
    async with conductor(limited) as c:
        first = await c.simulate_post("/v1/batch", body=body, headers=headers)
        again = await c.simulate_post("/v1/batch", body=body, headers=headers)
        over = await c.simulate_post("/v1/batch", body=segment_batch(3), headers=basic(INGEST_KEY))
        xml = await c.simulate_post(
            "/v1/batch", body=b"<a/>", headers={**basic(INGEST_KEY), "Content-Type": "text/xml"}
        )
        lz = await c.simulate_post("/e/?compression=lz64", body=b"x", headers=JSON)
        read_only = await c.simulate_post("/v1/batch", body=body, headers=basic(READ_KEY))
    assert first.status_code == 200 and first.json["accepted"] == 3
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json == first.json
    assert over.status_code == 429 and over.json["code"] == "rate_limited"
    assert int(over.headers["retry-after"]) > 0
    assert xml.status_code == 415 and xml.json["code"] == "unsupported_media_type"
    assert lz.status_code == 415 and lz.json["code"] == "unsupported_encoding"
    assert read_only.status_code == 403 and read_only.json["code"] == "insufficient_scope"
    # One batch published: the replay and the refusals published nothing.
    assert len(await drain_queue(settings, settings.queue_name)) == 1


async def test_our_own_headers_work_on_every_vendor_route(settings: Settings) -> None:
    async with conductor(settings) as c:
        answer = await c.simulate_post(
            "/2/httpapi",
            json={"events": [{"event_type": "t", "user_id": "user-1"}]},
            headers={**JSON, "X-API-Key": API_KEY},
        )
    assert answer.status_code == 200 and answer.json["events_ingested"] == 1


async def test_posthog_js_gzip_without_a_header_is_read_and_bounded_like_any_gzip(
    settings: Settings,
) -> None:
    # posthog-js sends gzip bodies as text/plain with no Content-Encoding: the magic bytes
    # say so, and the inflation limits apply as to any gzip body.
    events = [{"event": "view", "distinct_id": "d", "properties": {"token": INGEST_KEY}}]
    plain = {"Content-Type": "text/plain"}
    async with conductor(settings) as c:
        ok = await c.simulate_post("/e/", body=gzip.compress(orjson.dumps(events)), headers=plain)
        bomb = await c.simulate_post(
            "/e/", body=gzip.compress(b" " * (settings.max_body_bytes + 1)), headers=plain
        )
    assert ok.status_code == 200 and ok.json["accepted"] == 1
    assert bomb.status_code == 413 and bomb.json["code"] == "body_too_large"
