"""Hostile bodies through the whole path: never a 5xx, valid neighbours kept and stored.

Each case sends one hostile event beside a valid one (or a hostile body) to the app, with a
real worker behind it; afterwards every accepted event is in PostgreSQL, nothing refused
is, and the dead-letter queue is empty (the API must not accept what the database would
refuse).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from falcon import testing

from core.config import Settings
from service.app import create_app
from tests.conftest import API_KEY, new_event, queue_depth, running_worker, wait_for_rows

JSON = {"Content-Type": "application/json"}


def _raw_event(**raw_fields: bytes) -> bytes:
    """A JSON event whose fields are given as raw JSON bytes (to smuggle odd encodings)."""
    base = {k: orjson.dumps(v) for k, v in new_event().items()}
    base.update(raw_fields)
    return b"{" + b",".join(orjson.dumps(k) + b":" + v for k, v in base.items()) + b"}"


def _is_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


HOSTILE_EVENTS: dict[str, bytes] = {
    "nul_in_event_type": _raw_event(event_type=b'"a\\u0000b"'),
    "nul_in_user_id": _raw_event(user_id=b'"u\\u0000"'),
    "nul_in_properties": _raw_event(properties=b'{"k":"v\\u0000"}'),
    "nul_key_in_properties": _raw_event(properties=b'{"k\\u0000":1}'),
    "lone_surrogate": _raw_event(event_type=b'"\\ud800"'),
    "huge_integer_property": _raw_event(properties=b'{"n":123456789012345678901234567890}'),
    "huge_float_property": _raw_event(properties=b'{"n":1e400}'),
    "deeply_nested_properties": _raw_event(properties=b'{"a":' * 200 + b"1" + b"}" * 200),
    "huge_numeric_user_id": _raw_event(user_id=b"99999999999999999999999"),
    "negative_zero_user_id": _raw_event(user_id=b"-0"),
    "float_user_id": _raw_event(user_id=b"1.5"),
    "bool_user_id": _raw_event(user_id=b"true"),
    "year_zero": _raw_event(occurred_at=b'"0000-01-01T00:00:00Z"'),
    "year_10000": _raw_event(occurred_at=b'"10000-01-01T00:00:00Z"'),
    "bad_offset": _raw_event(occurred_at=b'"2025-01-01T00:00:00+25:00"'),
    "properties_array": _raw_event(properties=b"[1,2]"),
    "properties_string": _raw_event(properties=b'"{}"'),
    "event_id_with_spaces": _raw_event(event_id=b'" 123e4567-e89b-42d3-a456-426614174000 "'),
    "very_long_event_type": _raw_event(event_type=orjson.dumps("x" * 100_000)),
    "control_chars_in_type": _raw_event(event_type=b'"\\u0001\\u001f"'),
    "duplicate_keys": b'{"event_id":"'
    + str(uuid.uuid4()).encode()
    + b'","event_id":"not-a-uuid","occurred_at":"2025-08-21T06:52:34Z",'
    b'"user_id":"u","event_type":"t","properties":{}}',
}


@pytest.mark.parametrize("case", sorted(HOSTILE_EVENTS))
async def test_hostile_event_beside_a_valid_one(
    settings: Settings, db: asyncpg.Connection, case: str
) -> None:
    good = new_event(user_id="good")
    body = b"[" + orjson.dumps(good) + b"," + HOSTILE_EVENTS[case] + b"]"
    async with (
        testing.ASGIConductor(create_app(settings), headers={"X-API-Key": API_KEY}) as c,
        running_worker(settings),
    ):
        result = await c.simulate_post("/events?wait=true&timeout=20", body=body, headers=JSON)
        assert result.status_code in (200, 400), result.text
        answer = result.json
        if result.status_code == 400:  # the whole body refused (invalid JSON)
            assert answer["error"]["code"] in ("invalid_json", "no_valid_events")
            return
        assert answer["committed"] is True
        assert answer["received"] == 2
        assert answer["accepted"] + len(answer["rejected"]) == 2
        assert answer["accepted"] >= 1
        assert answer["inserted"] == answer["accepted"]
    stored = {str(r["event_id"]): r["user_id"] for r in await db.fetch("SELECT * FROM events")}
    assert len(stored) == answer["accepted"]
    assert stored[good["event_id"]] == "good"
    assert await queue_depth(settings, settings.dead_letter_queue_name) == 0


HOSTILE_BODIES: dict[str, tuple[bytes, dict[str, str]]] = {
    "invalid_utf8": (b'[{"event_type":"\xff\xfe"}]', JSON),
    "deep_arrays": (b"[" * 100_000 + b"]" * 100_000, JSON),
    "deep_objects": (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, JSON),
    "nul_bytes": (b"\x00" * 1000, JSON),
    "not_an_array": (b'"hello"', JSON),
    "number_body": (b"1e999999", JSON),
    "empty_array": (b"[]", JSON),
    "empty_body": (b"", JSON),
    "ndjson_garbage": (b'{"a":1}\n\xff\n{', {"Content-Type": "application/x-ndjson"}),
    "arrow_garbage": (
        b"ARROW1\x00\x00" * 50,
        {"Content-Type": "application/vnd.apache.arrow.stream"},
    ),
    "xml_content_type": (b"<events/>", {"Content-Type": "application/xml"}),
    "charset_latin1": (
        orjson.dumps([new_event()]),
        {"Content-Type": "application/json; charset=latin-1"},
    ),
    "multipart": (b"--x\r\n\r\n--x--", {"Content-Type": "multipart/form-data; boundary=x"}),
    "bad_gzip": (b"\x1f\x8b\x08\x00garbage", {**JSON, "Content-Encoding": "gzip"}),
    "encoding_list_abuse": (b"[]", {**JSON, "Content-Encoding": ", ".join(["gzip"] * 500)}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BODIES))
async def test_hostile_body_is_a_structured_4xx_and_nothing_is_queued(
    settings: Settings, case: str
) -> None:
    body, headers = HOSTILE_BODIES[case]
    async with testing.ASGIConductor(create_app(settings), headers={"X-API-Key": API_KEY}) as c:
        result = await c.simulate_post("/events", body=body, headers=headers)
    assert 400 <= result.status_code < 500, result.text
    error: dict[str, Any] = result.json["error"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert "Traceback" not in result.text
    assert await queue_depth(settings, settings.queue_name) == 0


async def test_every_accepted_event_of_a_mixed_hostile_batch_is_stored(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """All hostile events in one batch with valid ones: the valid ones are stored."""
    goods = [new_event(user_id=f"good-{i}") for i in range(5)]
    # (Cases that make the whole body invalid JSON, such as a lone surrogate or 1e400, are
    # refused as a whole: they have their own test above.)
    parts = [orjson.dumps(g) for g in goods] + [
        raw for raw in HOSTILE_EVENTS.values() if _is_json(raw)
    ]
    body = b"[" + b",".join(parts) + b"]"
    async with (
        testing.ASGIConductor(create_app(settings), headers={"X-API-Key": API_KEY}) as c,
        running_worker(settings),
    ):
        result = await c.simulate_post("/events?wait=true&timeout=20", body=body, headers=JSON)
    assert result.status_code == 200, result.text
    assert result.json["inserted"] == result.json["accepted"] >= 5
    assert await wait_for_rows(db, result.json["accepted"]) == result.json["accepted"]
    stored = {str(r["event_id"]) for r in await db.fetch("SELECT event_id FROM events")}
    assert {g["event_id"] for g in goods} <= stored
    assert await queue_depth(settings, settings.dead_letter_queue_name) == 0


async def test_a_body_without_content_type_is_read_as_json(settings: Settings) -> None:
    async with testing.ASGIConductor(create_app(settings), headers={"X-API-Key": API_KEY}) as c:
        result = await c.simulate_post("/events", body=orjson.dumps([new_event()]))
        utf8 = await c.simulate_post(
            "/events",
            body=orjson.dumps([new_event()]),
            headers={"Content-Type": 'application/json; charset="UTF-8"'},
        )
    assert (result.status_code, result.json["accepted"]) == (202, 1)
    assert utf8.status_code == 202
