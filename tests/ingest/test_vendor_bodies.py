"""The vendors' routes against the app (falcon.testing): bodies and requests the fuzz run
(tests/test_schemathesis.py) or a review of the OpenAPI document found answered wrongly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
from falcon import testing

from core.config import Settings
from ingest.vendors import segment
from ingest.vendors.records import namespace
from service.app import create_app
from service.openapi import openapi_document
from tests.conftest import API_KEY
from tests.ingest.test_openapi import check

JSON = {"Content-Type": "application/json"}


def conductor(settings: Settings) -> testing.ASGIConductor:
    return testing.ASGIConductor(create_app(settings), headers={"X-API-Key": API_KEY})


async def test_a_query_parameter_refused_before_the_route_is_answered_in_its_dialect(
    settings: Settings,
) -> None:
    """QueryGuard refuses a control character in any query parameter before the route
    runs; the refusal was in our own form (`{"error": ...}`), which PostHog's SDK cannot
    read (it reads `detail`) and the document's PostHog and Segment answers do not allow:
    `POST /capture?compression=%00` answered `{"error": {"code": "invalid_parameter"}}`."""
    body = orjson.dumps({"event": "e", "distinct_id": "u"})
    async with conductor(settings) as c:
        posthog = await c.simulate_post("/capture", query_string="compression=%00", body=body)
        segment = await c.simulate_post("/v1/track", query_string="wait=%01", body=body)
        amplitude = await c.simulate_post(
            "/2/httpapi", query_string="x=%00", body=b'{"events": []}', headers=JSON
        )
        ours = await c.simulate_post("/events", query_string="wait=%00", body=b"[]", headers=JSON)
    assert posthog.status_code == 400
    assert posthog.json["type"] == "validation_error"
    assert posthog.json["code"] == "invalid_parameter"
    assert "control characters" in posthog.json["detail"]
    assert segment.status_code == 400
    assert segment.json["success"] is False and segment.json["code"] == "invalid_parameter"
    assert amplitude.status_code == 400
    assert amplitude.json["code"] == 400 and amplitude.json["error_code"] == "invalid_parameter"
    assert ours.status_code == 400 and ours.json["error"]["code"] == "invalid_parameter"


async def test_a_message_id_that_only_looks_like_a_uuid_becomes_a_uuidv5(
    settings: Settings,
) -> None:
    """A vendor's id that is not a UUID becomes a UUIDv5 of the vendor and the id. The
    UUID test used `$`, which matches before a trailing newline: `"<uuid>\\n"` was taken as a
    UUID, passed on as the event_id, and refused as `invalid_uuid`."""
    looks_like = str(uuid.uuid4()) + "\n"
    message = {"type": "track", "event": "e", "userId": "u", "messageId": looks_like}
    async with conductor(settings) as c:
        answer = await c.simulate_post("/v1/batch", body=orjson.dumps({"batch": [message]}))
    assert answer.status_code == 200, answer.text
    assert answer.json["accepted"] == 1 and answer.json["rejected"] == []
    records = segment.translate({"batch": [message]}, "batch", datetime.now(UTC)).records
    assert records[0]["event_id"] == str(uuid.uuid5(namespace("segment"), looks_like))


def _segment(**fields: object) -> dict[str, object]:
    return {"type": "track", "event": "e", "userId": "u", **fields}


async def test_real_vendor_answers_match_the_documented_schemas(settings: Settings) -> None:
    """Each dialect's answers (success, some events refused, none valid, a body of the wrong
    shape, an unknown key, a Content-Type not read) against the document."""
    doc = openapi_document(settings)
    bad_time = {"timestamp": "yesterday"}
    amplitude = {"event_type": "e", "user_id": "u", "time": 1_700_000_000_000}
    calls: list[tuple[str, object, dict[str, str], int]] = [
        ("/v1/batch", {"batch": [_segment(), _segment(**bad_time)]}, {}, 200),
        ("/v1/batch", {"batch": [_segment(**bad_time)]}, {}, 400),
        ("/v1/batch", {"batch": {}}, {}, 400),
        ("/v1/track", _segment(type=None), {}, 400),
        ("/v1/identify", {"userId": "u", "traits": {"a": 1}}, {}, 200),
        ("/v1/track", _segment(), {"X-API-Key": "wrong"}, 401),
        ("/v1/track", _segment(), {"Content-Type": "text/csv"}, 415),
        ("/capture", {"event": "e", "distinct_id": "u"}, {}, 200),
        ("/e", [{"event": "e", "distinct_id": "u"}, {"event": "e"}], {}, 200),
        ("/i/v0/e", {"batch": [{"event": "e"}]}, {}, 400),
        ("/capture", "x", {}, 400),
        ("/batch", {"api_key": "wrong", "batch": [{"event": "e"}]}, {"X-API-Key": ""}, 401),
        ("/batch", {"events": [amplitude]}, {}, 200),
        ("/batch", {"events": [amplitude, {**amplitude, "time": "x"}]}, {}, 400),
        ("/2/httpapi", {"events": [amplitude]}, {}, 200),
        ("/2/httpapi", {"events": [{"event_type": "e"}]}, {}, 400),
        ("/2/httpapi", {"api_key": "wrong", "events": [amplitude]}, {"X-API-Key": ""}, 400),
        ("/2/httpapi", {"events": [amplitude]}, {"Content-Type": "text/csv"}, 415),
    ]
    async with conductor(settings) as c:
        for path, body, headers, status in calls:
            answer = await c.simulate_post(path, body=orjson.dumps(body), headers=headers)
            assert answer.status_code == status, (path, body, answer.text)
            check(doc, path, "post", answer.status_code, answer.json)
