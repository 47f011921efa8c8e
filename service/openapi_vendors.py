"""The vendors' capture routes in the OpenAPI document (``ingest/vendors/``).

Each route reads its vendor's JSON (``ingest/vendors/segment.py``, ``posthog.py``,
``amplitude.py``) into our events and answers in the form its SDK expects
(``ingest/dialects.py``). The request schemas say what each route accepts: a body that is
not of the route's shape is refused whole (400), while an event that breaks a rule is
refused alone and listed in ``rejected`` (Segment and PostHog answer 200 when some event
was valid; Amplitude answers 400 listing the invalid events, the valid ones stored all the
same). The rules on the values of an event are those of ``POST /events``, applied to the
fields each vendor's event is mapped to: the field schemas come from the document's
``Event`` (``event_fields``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from core.config import Settings
from ingest.answers import Accepted
from ingest.vendors import segment

_SCHEMAS = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _SCHEMAS + name}


def _header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


# A value a vendor's field may leave empty: absent, null or "" (the mapping's fallback).
_BLANK: dict[str, Any] = {"enum": [None, ""]}
_ANY_JSON = _ref("JsonValue")
_KEYS_DOC = (
    "The key is one of ours with the `ingest` scope, sent as the SDK sends it (see each "
    "operation) or in our own headers (`X-API-Key`, `Authorization: Bearer`); a key in a "
    "header wins over one in the body."
)
_CAPTURE_DOC = (
    "The events go through the pipeline of `POST /events`: the same limits, validation, "
    "rate limits and exactly-once storage (a vendor's message id becomes the event's "
    "`event_id`: a UUID as it is, any other id a UUIDv5 of the vendor and that id; a "
    "message without an id gets a UUIDv5 of its content). `Idempotency-Key`, `?wait=true` "
    "and `?timeout=` work as on `POST /events`. The body may be compressed "
    "(`Content-Encoding: gzip`, `zstd`, `deflate`); its Content-Type is JSON "
    "(`application/json`, also `text/plain`; UTF-8) or absent. Besides the vendor's "
    "fields, every answer carries ours (`received`, `accepted`, `rejected`, `batch_id`)."
)


def _object(
    properties: dict[str, Any], required: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


def _merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """Object schemas as one (properties and required joined; a later property wins)."""
    out: dict[str, Any] = {"type": "object", "properties": {}}
    required: list[str] = []
    for part in parts:
        for name, value in part.items():
            if name == "properties":
                out["properties"].update(value)
            elif name == "required":
                required += [r for r in value if r not in required]
            elif name != "type":
                out[name] = value
    if required:
        out["required"] = required
    return out


def _branches(base: dict[str, Any], *rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``base`` with one branch of each rule, for every combination: plain object schemas
    (no ``anyOf`` inside an ``allOf``), which generators and readers take as they are."""
    combos = [base]
    for rule in rules:
        combos = [_merge(combo, branch) for combo in combos for branch in rule]
    return combos


def _user_rule(main: str, fallback: str, user_id: dict[str, Any]) -> list[dict[str, Any]]:
    """``main`` is the user unless blank, then ``fallback`` is; a fallback that is not
    the user is kept in properties (any JSON)."""
    return [
        _object({main: user_id, fallback: _ANY_JSON}, [main]),
        _object({main: _BLANK, fallback: user_id}, [fallback]),
    ]


def _message_id(event_id: dict[str, Any], user_id: dict[str, Any]) -> dict[str, Any]:
    """A vendor's message id: a UUID (not the nil or max one) as it is; any other text or
    integer becomes a UUIDv5; blank, the UUIDv5 of the message's content."""
    integer = next(s for s in user_id["oneOf"] if s.get("type") == "integer")
    return {
        "anyOf": [
            _BLANK,
            {"type": "string", "not": event_id["not"]},
            {"type": "integer", "minimum": integer["minimum"], "maximum": integer["maximum"]},
        ],
        "description": "A UUID is the event's `event_id` as it is (not the nil or max UUID); "
        "any other text or integer becomes a UUIDv5 of the vendor and the id; absent, null "
        "or empty: a UUIDv5 of the message's content.",
    }


def _fields() -> dict[str, dict[str, Any]]:
    """The Event's rules for the fields a vendor's event is mapped to (components named
    ``Vendor*``, from the Event's field schemas: ``_shared``)."""
    return {
        "event_id": _ref("VendorMessageId"),
        "occurred_at": _ref("VendorTimestamp"),
        "user_id": _ref("VendorUserId"),
        "event_type": _ref("VendorEventType"),
        "properties": _ref("VendorProperties"),
    }


def _shared(event_fields: dict[str, Any]) -> dict[str, Any]:
    def bare(name: str) -> dict[str, Any]:
        return {k: v for k, v in event_fields[name].items() if k != "description"}

    return {
        "VendorMessageId": _message_id(event_fields["event_id"], event_fields["user_id"]),
        "VendorTimestamp": {
            **bare("occurred_at"),
            "description": "A time as `occurred_at` takes it (ISO 8601).",
        },
        "VendorUserId": {**bare("user_id"), "description": "Becomes `user_id`: its rules."},
        "VendorEventType": {
            **bare("event_type"),
            "description": "Becomes `event_type`: its rules.",
        },
        "VendorProperties": {
            **bare("properties"),
            "description": "An object (or null): the event's `properties`.",
        },
    }


# ---------------------------------------------------------------------------------------
# Request bodies


def _segment_message(
    kind: str, f: dict[str, dict[str, Any]], *, type_required: bool
) -> list[dict[str, Any]]:
    """Segment's message of one call (``segment._record``), as plain object schemas."""
    props: dict[str, Any] = {
        "type": {"const": kind},
        "messageId": f["event_id"],
        "properties": f["properties"],
        "context": _ANY_JSON,
    }
    required: list[str] = ["type"] if type_required else []
    if kind == "track":
        props["event"] = f["event_type"]
        required.append("event")
    if kind in ("identify", "group"):
        props["traits"] = _ANY_JSON
    if kind in ("page", "screen"):
        props["name"] = _ANY_JSON
        props["category"] = _ANY_JSON
    if kind == "group":
        props["groupId"] = _ANY_JSON
    if kind == "alias":
        props["previousId"] = _ANY_JSON
    timestamp = [
        _object({"timestamp": f["occurred_at"]}, ["timestamp"]),
        _object({"timestamp": _BLANK, "originalTimestamp": {"anyOf": [_BLANK, f["occurred_at"]]}}),
    ]
    return _branches(
        _object(props, required), _user_rule("userId", "anonymousId", f["user_id"]), timestamp
    )


_SEGMENT_MESSAGE_DOC = (
    "A Segment message (`type`: track, identify, page, screen, group, alias). `messageId` is "
    "the event_id, `timestamp` (else `originalTimestamp`, else the time received) "
    "occurred_at, `userId` (else `anonymousId`) user_id, `event` the event_type of a track "
    "(`$identify`, `$pageview`, `$screen`, `$group`, `$alias` for the others), "
    "`properties` the properties, with `context` as `$context`, `anonymousId` (beside a "
    "userId) as `$anonymous_id`, `traits` as `$traits`, `name`/`category` as "
    "`$name`/`$category`, `groupId` as `$group_id`, `previousId` as `$previous_id`. Other "
    "fields are ignored."
)


def _posthog_event(f: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """PostHog's event (``posthog._record``)."""
    base = _object(
        {
            "event": f["event_type"],
            "uuid": f["event_id"],
            "timestamp": {"anyOf": [_BLANK, f["occurred_at"]]},
            "offset": {"description": "Milliseconds before now it happened (no timestamp)."},
            "properties": f["properties"],
            "$set": _ANY_JSON,
            "$set_once": _ANY_JSON,
        },
        ["event"],
    )
    props_with_user = _merge(
        _ref_object(),
        _object({"distinct_id": f["user_id"]}, ["distinct_id"]),
    )
    user = [
        _object({"distinct_id": f["user_id"]}, ["distinct_id"]),
        _object({"distinct_id": _BLANK, "properties": props_with_user}, ["properties"]),
    ]
    return {
        "anyOf": _branches(base, user),
        "description": "A PostHog event: `uuid` is the event_id, `timestamp` (else now "
        "less `offset` milliseconds, else now) occurred_at, `distinct_id` (else "
        "`properties.distinct_id`) user_id, `event` event_type, `properties` the "
        "properties with `$set` and `$set_once` beside them. Other fields are ignored.",
    }


def _ref_object() -> dict[str, Any]:
    """``JsonObject`` written out (to be merged with more rules)."""
    return {
        "type": "object",
        "propertyNames": {"type": "string", "pattern": "^[^\\x00]*$"},
        "additionalProperties": _ANY_JSON,
    }


# Amplitude's epoch milliseconds a datetime can hold (``records.iso_from_millis``).
_MIN_MS, _MAX_MS = -62_135_596_800_000, 253_402_300_799_999


def _amplitude_event(f: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Amplitude's event (``amplitude._record``)."""
    base = _object(
        {
            "event_type": f["event_type"],
            "insert_id": f["event_id"],
            "time": {
                "anyOf": [
                    {"type": "null"},
                    {"type": "number", "minimum": _MIN_MS, "maximum": _MAX_MS},
                    f["occurred_at"],
                ],
                "description": "Epoch milliseconds (an ISO 8601 text is read too); absent "
                "or null: the time received.",
            },
            "event_properties": f["properties"],
            "user_properties": _ANY_JSON,
            "groups": _ANY_JSON,
            "group_properties": _ANY_JSON,
        },
        ["event_type"],
        propertyNames={"type": "string", "pattern": "^[^\\x00]*$"},
        additionalProperties=_ANY_JSON,
    )
    return {
        "anyOf": _branches(base, _user_rule("user_id", "device_id", f["user_id"])),
        "description": "An Amplitude event: `insert_id` is the event_id, `time` occurred_at, "
        "`user_id` (else `device_id`) user_id, `event_type` event_type, `event_properties` "
        "the properties with `user_properties`, `groups`, `group_properties`, `device_id` "
        "(beside a user_id) and every other field (as `$context`: `platform`, `os_name`, "
        "...) beside them.",
    }


def _events(item: dict[str, Any], s: Settings) -> dict[str, Any]:
    return {
        "type": "array",
        "items": item,
        "minItems": 1,
        "maxItems": s.max_events_per_request,
    }


_NOT_ARRAY: dict[str, Any] = {"not": {"type": "array"}}


def _kind_name(kind: str, *, call: bool) -> str:
    return f"Segment{kind.capitalize()}" + ("Call" if call else "")


def request_schemas(settings: Settings, event_fields: dict[str, Any]) -> dict[str, Any]:
    """The component schemas of the vendors' bodies."""
    f = _fields()
    s = settings
    key = {"description": "The API key (when no header carries one); text, else ignored."}
    messages: dict[str, Any] = {}
    for kind in segment.CALLS:
        messages[_kind_name(kind, call=False)] = {
            "anyOf": _segment_message(kind, f, type_required=True),
            "description": f"A Segment `{kind}` message.",
        }
        messages[_kind_name(kind, call=True)] = {
            "anyOf": [
                _merge(b, _object({"writeKey": key}))
                for b in _segment_message(kind, f, type_required=False)
            ],
            "description": f"A Segment `{kind}` message sent to `/v1/{kind}`: `type` may be "
            "left out.",
        }
    return {
        **_shared(event_fields),
        **messages,
        "SegmentMessage": {
            "anyOf": [_ref(_kind_name(kind, call=False)) for kind in segment.CALLS],
            "description": _SEGMENT_MESSAGE_DOC,
        },
        "SegmentBatch": _object(
            {"batch": _events(_ref("SegmentMessage"), s), "writeKey": key},
            ["batch"],
            description="Segment's batch. `context`, `integrations` and other top-level "
            "fields are ignored.",
        ),
        "PostHogEvent": _posthog_event(f),
        "PostHogBatch": _object(
            {"batch": _events(_ref("PostHogEvent"), s), "api_key": key, "token": key},
            ["batch"],
            description="PostHog's batch (`historical_migration` and other fields are ignored).",
        ),
        "AmplitudeEvent": _amplitude_event(f),
        "AmplitudeBatch": _object(
            {
                "api_key": key,
                "events": _events(_ref("AmplitudeEvent"), s),
                "options": {"description": "Ignored."},
            },
            ["events"],
            description="Amplitude's HTTP V2 / Batch body.",
        ),
    }


def _segment_single(kind: str) -> dict[str, Any]:
    """``/v1/<kind>``'s body: a message of that call (``type`` optional), or of another
    call with its ``type`` (taken as that call)."""
    others = [_ref(_kind_name(other, call=False)) for other in segment.CALLS if other != kind]
    return {
        "anyOf": [_ref(_kind_name(kind, call=True)), *others],
        "description": f"One message; `type` is `{kind}` when absent (another call's "
        "`type` is taken as that call). " + _SEGMENT_MESSAGE_DOC,
    }


def _posthog_capture(*, batch_path: bool) -> dict[str, Any]:
    """``/capture``'s body: one event (its key beside its fields), an array of events, or a
    batch; ``/batch``'s the same, less a body with an ``events`` array (Amplitude's)."""
    extra = {"events": _NOT_ARRAY} if batch_path else {}
    key = {"type": "string", "description": "The API key (when no header carries one)."}
    one = {
        "allOf": [
            _ref("PostHogEvent"),
            _object({"batch": _NOT_ARRAY, "api_key": key, "token": key, **extra}),
        ]
    }
    batch = {"allOf": [_ref("PostHogBatch"), _object(extra)]} if extra else _ref("PostHogBatch")
    array = {"type": "array", "items": _ref("PostHogEvent"), "minItems": 1}
    return {"anyOf": [batch, one, array]}


# ---------------------------------------------------------------------------------------
# Answers


def _accepted_fields() -> tuple[dict[str, Any], list[str]]:
    """Our answer's fields (``Accepted`` less ``error``), as every dialect carries them."""
    _, components = msgspec.json.schema_components((Accepted,), ref_template=_SCHEMAS + "{name}")
    accepted = components["Accepted"]
    fields = {k: v for k, v in accepted["properties"].items() if k != "error"}
    return fields, list(accepted["required"])


def _answer(own: dict[str, Any], required: list[str], description: str) -> dict[str, Any]:
    fields, ours = _accepted_fields()
    return {
        "type": "object",
        "description": description,
        "properties": {**own, **fields},
        "required": [*required, *ours],
        "additionalProperties": False,
    }


def _error(own: dict[str, Any], required: list[str], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": own,
        "required": required,
        "additionalProperties": False,
    }


def answer_schemas() -> dict[str, Any]:
    """The component schemas of each dialect's answers (``ingest/dialects.py``)."""
    no_valid = {"const": "no_valid_events"}
    detail = _ref("ErrorDetail")
    _, details = msgspec.json.schema_components((Accepted,), ref_template=_SCHEMAS + "{name}")
    amplitude_details = {
        k: v for k, v in details["ErrorDetail"]["properties"].items() if k != "code"
    }
    by_field = {
        "type": "object",
        "additionalProperties": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "description": "Amplitude's field name -> the indexes of the events it made invalid.",
    }
    count = {"type": "integer", "minimum": 0}
    return {
        "SegmentAccepted": _answer(
            {"success": {"const": True}}, ["success"], "Segment's success, with our fields."
        ),
        "SegmentRejected": _answer(
            {"success": {"const": False}, "code": no_valid, "message": {"type": "string"}},
            ["success", "code", "message"],
            "No event was valid: each refusal is listed in `rejected`.",
        ),
        "SegmentError": _error(
            {
                "success": {"const": False},
                "code": _ref("ErrorCode"),
                "message": {"type": "string"},
                "error": detail,
            },
            ["success", "code", "message", "error"],
            "Segment's error: `code` and `message` (on which RudderStack's SDK drops a 4xx "
            "rather than retrying it), with our `error` beside them.",
        ),
        "PostHogAccepted": _answer(
            {"status": {"const": 1}}, ["status"], "PostHog's success, with our fields."
        ),
        "PostHogRejected": _answer(
            {
                "type": {"const": "validation_error"},
                "code": no_valid,
                "detail": {"type": "string"},
                "attr": {"type": "null"},
            },
            ["type", "code", "detail", "attr"],
            "No event was valid: each refusal is listed in `rejected`.",
        ),
        "PostHogError": _error(
            {
                "type": {"enum": ["validation_error", "authentication_error", "server_error"]},
                "code": _ref("ErrorCode"),
                "detail": {"type": "string"},
                "attr": {"type": "null"},
                "error": detail,
            },
            ["type", "code", "detail", "attr", "error"],
            "PostHog's error (its SDK reads `detail`; it retries 408, 429 and 5xx), with our "
            "`error` beside it.",
        ),
        "AmplitudeAccepted": _answer(
            {
                "code": {"const": 200},
                "events_ingested": count,
                "payload_size_bytes": count,
                "server_upload_time": {"type": "integer", "description": "Epoch ms."},
            },
            ["code", "events_ingested", "payload_size_bytes", "server_upload_time"],
            "Amplitude's success (every event was valid), with our fields.",
        ),
        "AmplitudeRejected": _answer(
            {
                "code": {"const": 400},
                "error": {"type": "string"},
                "events_with_missing_fields": by_field,
                "events_with_invalid_fields": by_field,
            },
            ["code", "error", "events_with_missing_fields", "events_with_invalid_fields"],
            "Some event was invalid: Amplitude's 400 lists them by field (its SDK drops those "
            "and sends the rest again); the valid ones were accepted all the same "
            "(`accepted`, `batch_id`), so the resend stores nothing twice.",
        ),
        "AmplitudeError": _error(
            {
                "code": {"type": "integer", "description": "The HTTP status."},
                "error": {"type": "string"},
                "error_code": _ref("ErrorCode"),
                "message": {"type": "string"},
                **amplitude_details,
            },
            ["code", "error", "error_code", "message"],
            "Amplitude's error (`code`, `error`), with our error's fields beside it "
            "(`error_code` is our `code`). An unknown key or one without the `ingest` scope "
            'is a 400 whose `error` starts with "Invalid API key: ", on which the SDK stops.',
        ),
    }


# ---------------------------------------------------------------------------------------
# Operations

_RATE_HEADERS = {
    "RateLimit-Limit": _header("RateLimit-Limit"),
    "RateLimit-Remaining": _header("RateLimit-Remaining"),
    "RateLimit-Reset": _header("RateLimit-Reset"),
}
_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when this is a stored answer.",
        "schema": {"const": "true"},
    }
}
_WWW_AUTHENTICATE = {
    "description": "How to authenticate (`Bearer`).",
    "schema": {"type": "string"},
}


def _one_of(names: list[str]) -> dict[str, Any]:
    return _ref(names[0]) if len(names) == 1 else {"anyOf": [_ref(n) for n in names]}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _responses(dialects: list[str]) -> dict[str, Any]:
    """Each status a vendor route answers, in its dialects' forms."""
    errors = [f"{d}Error" for d in dialects]
    amplitude_only = dialects == ["Amplitude"]

    def error(description: str, **extra: Any) -> dict[str, Any]:
        return _json(_one_of(errors), description, **extra)

    retry = {"Retry-After": _header("Retry-After")}
    key_errors = (
        "; for Amplitude an unknown key or one without the `ingest` scope "
        '(`error`: "Invalid API key: ...")'
        if "Amplitude" in dialects
        else ""
    )
    responses: dict[str, Any] = {
        "200": _json(
            _one_of([f"{d}Accepted" for d in dialects]),
            "Every event was accepted: durable in RabbitMQ (with `?wait=true`: `committed` "
            "says whether they were committed in time)."
            if amplitude_only
            else "Accepted: the valid events are durable in RabbitMQ (with `?wait=true`: "
            "`committed` says whether they were committed in time); events refused alone "
            "are listed in `rejected`.",
            headers={**_RATE_HEADERS, **_REPLAYED},
        ),
        "400": _json(
            {"anyOf": [_ref(f"{d}Rejected") for d in dialects] + [_ref(e) for e in errors]},
            (
                "Some event was invalid (listed by field; the valid ones were accepted)"
                if amplitude_only
                else "No event was valid (`no_valid_events`, each listed)"
            )
            + ", or the body cannot be used (`invalid_json`, `invalid_body`: not the route's "
            "shape, `empty_batch`, `invalid_encoding`) or a parameter" + key_errors + ".",
            headers={**_RATE_HEADERS, "WWW-Authenticate": _WWW_AUTHENTICATE},
        ),
    }
    if not amplitude_only:
        responses["401"] = error(
            "No API key (in a header or the body), or an unknown one (`unauthorized`).",
            headers={"WWW-Authenticate": {**_WWW_AUTHENTICATE, "required": True}},
        )
        responses["403"] = error("The key has no `ingest` scope (`insufficient_scope`).")
    responses.update(
        {
            "408": _json(
                {"anyOf": [*(_ref(e) for e in errors), _ref("Error")]},
                "The body did not arrive in time (`request_timeout`; our own form when the "
                "server's connection guard answers it).",
            ),
            "409": error("A request with this Idempotency-Key is still running.", headers=retry),
            "413": error(
                "A size limit (`body_too_large`, `too_many_events`, `too_many_values`), or more "
                "events than the rate limit's bucket (`rate_limit_exceeds_burst`)."
            ),
            "415": error(
                "Not JSON (`unsupported_media_type`), not UTF-8 (`unsupported_charset`), or "
                "an unsupported Content-Encoding or `compression` (`unsupported_encoding`)."
            ),
            "422": error("This Idempotency-Key was used with another body."),
            "429": error(
                "The key's rate limit is reached (`rate_limited`).",
                headers={**_RATE_HEADERS, **retry},
            ),
            "431": _json(
                _ref("Error"),
                "The request line and headers are larger than EVENTS_MAX_HEADER_BYTES "
                "(`headers_too_large`, our own form); the connection is closed.",
            ),
            "503": error(
                "RabbitMQ down, the queue full, Redis down with EVENTS_REDIS_FAILURE=closed, "
                "or this server decoding as many large bodies as it can hold; nothing was "
                "accepted, retry.",
                headers=retry,
            ),
        }
    )
    return responses


_SECURITY = [{"ApiKey": ["ingest"]}, {"Bearer": ["ingest"]}, {"Basic": ["ingest"]}]
# Amplitude's SDKs send no header: the key is in the body, and a request without a known
# key is a 400 "Invalid API key: ..." (not a 401), so no header scheme is required.
_BODY_KEY_SECURITY = [*_SECURITY, {}]


def _body(schema: dict[str, Any], *, text: bool) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    if text:  # posthog-js sends its JSON as text/plain
        content["text/plain"] = {"schema": schema}
    return {"required": True, "content": content}


def _operation(
    summary: str,
    description: str,
    body: dict[str, Any],
    dialects: list[str],
    *,
    keys: str,
    posthog: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": ["vendors"],
        "security": _BODY_KEY_SECURITY if "Amplitude" in dialects else _SECURITY,
        "summary": summary,
        "description": f"{description}\n\nKeys: {keys} {_KEYS_DOC}\n\n{_CAPTURE_DOC}",
        "requestBody": _body(body, text=posthog),
        "responses": _responses(dialects),
    }
    return {"post": operation}


_SEGMENT_KEYS = "Segment's and RudderStack's SDKs send the write key as the Basic user name "
_SEGMENT_KEYS += "(`Authorization: Basic base64(key:)`); a body's `writeKey` is read too."
_POSTHOG_KEYS = "PostHog's SDKs send the project key in the body: `api_key` or `token` at "
_POSTHOG_KEYS += "its top, else the first event's `api_key` or `properties.token`."
_AMPLITUDE_KEYS = "Amplitude's SDKs send the key in the body: `api_key`."


def vendor_paths(settings: Settings, event_fields: dict[str, Any]) -> dict[str, Any]:
    """The vendors' operations, by path."""
    segment_doc = (
        "Segment's HTTP Tracking API, as Segment's SDKs (analytics-python, analytics.js, "
        "analytics-node, the mobile SDKs) and RudderStack's (rudder-sdk-python, ...) send "
        "it. Answers are Segment's: 200 `{success: true}`, errors `{success: false, code, "
        "message}`."
    )
    paths: dict[str, Any] = {
        "/v1/batch": _operation(
            "Segment / RudderStack: a batch of messages",
            segment_doc + " A message that breaks a rule is refused alone (listed in "
            "`rejected`); the others are accepted.",
            _ref("SegmentBatch"),
            ["Segment"],
            keys=_SEGMENT_KEYS,
        )
    }
    for call in segment.CALLS:
        paths[f"/v1/{call}"] = _operation(
            f"Segment / RudderStack: one {call} message",
            segment_doc,
            _segment_single(call),
            ["Segment"],
            keys=_SEGMENT_KEYS,
        )
    posthog_doc = (
        "PostHog's capture API, as PostHog's SDKs (posthog-python, posthog-js, posthog-node, "
        "the mobile SDKs) send it: one event (its `api_key` beside its fields), an array of "
        "events, or `{api_key, batch: [...]}`. Answers are PostHog's: 200 `{status: 1}`, "
        "errors `{type, code, detail, attr}`. An event that breaks a rule is refused alone "
        "(listed in `rejected`); the others are accepted. A `text/plain` body is read as "
        "JSON. `?compression=gzip-js` (posthog-js) or `?compression=gzip`, in any case, "
        "means the body is gzip (a `Content-Encoding` header wins); PostHog's `lz64` and "
        "`base64` bodies are not read (415 `unsupported_encoding`)."
    )
    for path in ("/capture", "/e", "/i/v0/e"):
        paths[path] = _operation(
            "PostHog: capture events",
            posthog_doc + " The path may end in `/`.",
            _posthog_capture(batch_path=False),
            ["PostHog"],
            keys=_POSTHOG_KEYS,
            posthog=True,
        )
    paths["/batch"] = _operation(
        "PostHog batch, or Amplitude's Batch API",
        "One path for two vendors (`/batch/` is the same path): a body with an `events` array "
        "at its top is Amplitude's Batch API (amplitude-analytics with `use_batch`, answered "
        "as Amplitude), any other is PostHog's (answered as PostHog; the shapes of `/capture`). "
        "A refusal made before the body is read (a key in a header, the Content-Type, a "
        "size limit) is in PostHog's form."
        "\n\n" + posthog_doc,
        {"anyOf": [_ref("AmplitudeBatch"), _posthog_capture(batch_path=True)]},
        ["PostHog", "Amplitude"],
        keys=f"{_POSTHOG_KEYS} {_AMPLITUDE_KEYS}",
        posthog=True,
    )
    paths["/2/httpapi"] = _operation(
        "Amplitude: HTTP V2 API",
        "Amplitude's HTTP V2 API, as Amplitude's SDKs (amplitude-analytics for Python, the "
        "Browser, Node and mobile SDKs) send it. Answers are Amplitude's: 200 `{code: 200, "
        "events_ingested, ...}`; a 400 `{code: 400, error, events_with_invalid_fields, "
        "events_with_missing_fields}` lists the invalid events while the valid ones are "
        "accepted (the SDK drops the listed ones and sends the rest again: their event ids "
        "make that resend a no-op); a 413 makes the SDK split the batch.",
        _ref("AmplitudeBatch"),
        ["Amplitude"],
        keys=_AMPLITUDE_KEYS,
    )
    return paths


BASIC_SCHEME = {
    "type": "http",
    "scheme": "basic",
    "description": "The key as the user name, any password (Segment's and RudderStack's "
    "write key).",
}
