"""The OpenAPI 3.1 document of the HTTP API, built from the settings it describes.

Kept beside the code it documents: ``tests/ingest/test_openapi.py`` checks that every route
of the app is documented and every documented route exists, validates the document against
the OpenAPI 3.1 schema, and checks real answers against the documented response schemas.
Served at ``GET /openapi.json``; ``GET /docs`` renders it with Swagger UI, whose files ship
inside the package (``service/static/swagger-ui``), so the page works offline.
"""

from __future__ import annotations

from typing import Any

import msgspec

from analytics.answers import ActiveUsers, Cohorts, Dau, DauBreakdown, Funnel, Retention, TopEvents
from analytics.params import (
    DEFAULT_WINDOW_SECONDS,
    MAX_ACTIVE_WINDOW,
    MAX_BREAKDOWN_LIMIT,
    MAX_DEPTH,
    MAX_SEGMENTS,
    MAX_STEPS,
    MAX_VALUE_LENGTH,
    MAX_WINDOW_SECONDS,
    MIN_STEPS,
)
from core.codes import Error
from core.config import Settings
from ingest.answers import Accepted
from service.openapi_vendors import BASIC_SCHEME, answer_schemas, request_schemas, vendor_paths
from service.operations import Health, Ready


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    extra = {}
    if retry_after:
        extra["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    return _json(_ref("Error"), description, **extra)


_UNAUTHORIZED = _json(
    _ref("Error"),
    "No API key, or an unknown one (`unauthorized`).",
    headers={
        "WWW-Authenticate": {
            "description": "How to authenticate (`Bearer`).",
            "required": True,
            "schema": {"type": "string"},
        }
    },
)
_HEADERS_TOO_LARGE = _error(
    "The request line and headers are larger than EVENTS_MAX_HEADER_BYTES "
    "(`headers_too_large`); the connection is closed."
)

_RATE_HEADERS = {
    "RateLimit-Limit": {"$ref": "#/components/headers/RateLimit-Limit"},
    "RateLimit-Remaining": {"$ref": "#/components/headers/RateLimit-Remaining"},
    "RateLimit-Reset": {"$ref": "#/components/headers/RateLimit-Reset"},
}


# The rules the API enforces, as JSON Schema patterns, so that a client (or a fuzzer) can
# tell from the document alone whether a value will be accepted.

# Any text without C0/C1 control characters or DEL: the API refuses those in every query
# parameter (service/app.py QueryGuard).
_VISIBLE = r"[^\x00-\x1f\x7f-\x9f]"
_NO_CONTROL = f"^{_VISIBLE}*$"
# What Python's str.strip() removes, less the control characters refused anyway.
_SPACE = r"[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
# Whitespace as Arrow's utf8_trim_whitespace (and str.isspace) know it: a user_id or
# event_type made only of these is refused as empty.
_WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Not blank and no NUL (PostgreSQL's text cannot hold one).
_TEXT = rf"^[^\x00]*[^\x00{_WHITESPACE}][^\x00]*$"

# Month and day of a real calendar date (February 29 only in leap years, below).
_MONTH_DAY = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
# Analytics dates: 1970-01-01 to 2999-12-31 (analytics/params.py EARLIEST, LATEST).
_STATS_YEAR = r"(?:19[7-9][0-9]|2[0-9]{3})"
_STATS_LEAP = r"(?:19(?:7[26]|8[048]|9[26])|2[0-9](?:0[48]|[2468][048]|[13579][26])|2[048]00)"
_STATS_DATE = rf"^(?:{_STATS_YEAR}-{_MONTH_DAY}|{_STATS_LEAP}-02-29)$"
# occurred_at: years 0001-9999, a time of at least the hour, seconds and fraction optional,
# `T`, `t` or a space between, and an optional offset (none means UTC); ingest/validate.py
# _TIMESTAMP_RE plus the calendar checks of _parse_timestamps.
_YEAR = r"(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_LEAP = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_TIME = r"[Tt ](?:[01][0-9]|2[0-3])(?::[0-5][0-9](?::[0-5][0-9](?:[.,][0-9]+)?)?)?"
_OFFSET = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?"
_TIMESTAMP = rf"^(?:{_YEAR}-{_MONTH_DAY}|{_LEAP}-02-29){_TIME}{_OFFSET}$"
# event_id: 32 hex digits, hyphens optional between the usual groups; not the nil or max UUID.
_UUID = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
_NIL_OR_MAX_UUID = (
    r"^(?:0{8}-?0{4}-?0{4}-?0{4}-?0{12}|[fF]{8}-?[fF]{4}-?[fF]{4}-?[fF]{4}-?[fF]{12})$"
)
# orjson reads integers in this range as integers (beyond: floats, refused as a user_id).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _segment_pattern() -> str:
    name = r"[A-Za-z0-9_\-]{1,64}"
    key = rf"(?:event_type|properties(?:\.{name}){{1,{MAX_DEPTH}}})"
    return rf"^{_SPACE}*{key}{_SPACE}*[:=]{_VISIBLE}{{0,{MAX_VALUE_LENGTH}}}$"


def _date_param(name: str, description: str, *, required: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description + " From 1970-01-01 to 2999-12-31.",
        "schema": {"type": "string", "format": "date", "pattern": _STATS_DATE},
    }


_SEGMENT_PARAMS: list[dict[str, Any]] = [
    {
        "name": "segment",
        "in": "query",
        "description": "Only count events matching `field:value` (or `field=value`); `field` "
        "is `event_type` or `properties.<path>`: up to 8 names of letters, digits, `_` or "
        "`-` (at most 64 each) separated by dots for nested keys. A value is at most "
        f"{MAX_VALUE_LENGTH} characters. Repeatable (all must match); at most "
        f"{MAX_SEGMENTS} segments in all, the `event_type` and `properties.<path>=value` "
        "shorthands included.",
        "schema": {
            "type": "array",
            "items": {"type": "string", "pattern": _segment_pattern()},
            "maxItems": MAX_SEGMENTS,
        },
        "style": "form",
        "explode": True,
    },
    {
        "name": "event_type",
        "in": "query",
        "description": "Shorthand for `segment=event_type:<value>` (`properties.<path>=<value>` "
        "is the shorthand for a property).",
        "schema": {"type": "string", "maxLength": MAX_VALUE_LENGTH, "pattern": _NO_CONTROL},
    },
]


def _windows_param(max_days: int) -> dict[str, Any]:
    return {
        "name": "windows",
        "in": "query",
        "description": f"At most {max_days} days' worth: {max_days} daily or "
        f"{max_days // 7} weekly windows.",
        "schema": {"type": "integer", "minimum": 1, "maximum": max(1, max_days), "default": 3},
    }


_GRANULARITY_PARAM: dict[str, Any] = {
    "name": "granularity",
    "in": "query",
    "description": "Window length (aliases `window_type`, `period_type`); `daily`, `days`, "
    "`weekly`, `weeks` work too, in any case; empty means the default.",
    "schema": {
        "type": "string",
        "enum": ["day", "week", "daily", "days", "weekly", "weeks", ""],
        "default": "day",
    },
}
# An event type in ``steps``: no comma, no control character, not only spaces.
_STEP_CHAR = r"[^,\x00-\x1f\x7f-\x9f]"
_STEP_PATTERN = rf"^{_STEP_CHAR}*(?!{_SPACE}){_STEP_CHAR}{_STEP_CHAR}*$"
_BREAKDOWN_PATTERN = (
    rf"^{_SPACE}*(?:event_type|properties(?:\.[A-Za-z0-9_\-]{{1,64}}){{1,{MAX_DEPTH}}}){_SPACE}*$"
)

_SCOPES_DOC = (
    "A key configured as `KEY` has every scope; `KEY:ingest`, `KEY:read`, `KEY:read+admin` "
    "only those. Each operation lists the scope it needs (the role names of its security "
    "requirement); a key without it gets 403 `insufficient_scope`."
)


def _scoped(scope: str) -> list[dict[str, list[str]]]:
    """Either way of sending a key, with the scope (OpenAPI 3.1 role) the operation needs."""
    return [{"ApiKey": [scope]}, {"Bearer": [scope]}]


def _stats_operation(
    summary: str,
    description: str,
    params: list[dict[str, Any]],
    answer: str,
    max_days: int,
    *,
    alternative: str | None = None,
) -> dict[str, Any]:
    schema = _ref(answer) if alternative is None else {"oneOf": [_ref(answer), _ref(alternative)]}
    return {
        "get": {
            "tags": ["analytics"],
            "security": _scoped("read"),
            "summary": summary,
            "description": description,
            "parameters": params + _SEGMENT_PARAMS,
            "responses": {
                "200": _json(schema, "The answer."),
                "400": _error(
                    "A parameter is missing or invalid (`invalid_parameter`), among them what "
                    "the schemas cannot say: `from` after `to`, a range of more than "
                    f"{max_days} days, more than {MAX_SEGMENTS} segments in all, more windows "
                    f"than fit in {max_days} days."
                ),
                "401": _UNAUTHORIZED,
                "403": _error("The key has no `read` scope (`insufficient_scope`)."),
                "431": _HEADERS_TOO_LARGE,
                "503": _error(
                    "PostgreSQL cannot be read right now (`database_unavailable`), a "
                    "lake file is missing, damaged or replaced (`lake_unreadable`), this "
                    "server runs as many queries as it allows (`too_many_queries`), or the "
                    "query took too long (`query_timeout`) or too much memory "
                    "(`query_too_large`); retry.",
                    retry_after=True,
                ),
            },
        }
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The document, with this deployment's limits written into it."""
    s = settings
    earliest = s.min_occurred_at.isoformat()
    event: dict[str, Any] = {
        "type": "object",
        "required": ["event_id", "occurred_at", "user_id", "event_type"],
        "description": "Unknown fields are ignored. The whole event (`user_id`, `event_type` "
        f"and `properties` as JSON) is at most {s.max_event_bytes} bytes; a larger one is "
        "refused alone.",
        "properties": {
            "event_id": {
                "type": "string",
                "pattern": _UUID,
                "not": {"pattern": _NIL_OR_MAX_UUID},
                "description": "A UUID (hyphens optional, any case; not the nil or max UUID), "
                "unique per event for all time: a resend with the same id is stored once "
                "(first write wins).",
            },
            "occurred_at": {
                "type": "string",
                "pattern": _TIMESTAMP,
                "description": "ISO 8601 such as `2025-08-21T06:52:34+03:00`: a time of at "
                "least the hour, the offset optional (none means UTC); stored in UTC, "
                f"microseconds. Not before {earliest} and at most {s.max_future_seconds} s "
                "in the future (and within years 1-9999 in UTC).",
            },
            "user_id": {
                "oneOf": [
                    {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": s.max_user_id_length,
                        "pattern": _TEXT,
                    },
                    {"type": "integer", "minimum": _INT_MIN, "maximum": _INT_MAX},
                ],
                "description": "Not blank, no NUL; an integer (64-bit, written without "
                "fraction or exponent) is stored as its decimal text.",
            },
            "event_type": {
                "type": "string",
                "minLength": 1,
                "maxLength": s.max_event_type_length,
                "pattern": _TEXT,
                "description": "Not blank, no NUL.",
            },
            "properties": {
                "anyOf": [_ref("JsonObject"), {"type": "null"}],
                "description": "Any JSON object without NUL (`\\u0000`) in its texts (`{}` "
                "when absent or null; a `properties_json` string holding such an object is "
                "read instead when `properties` is absent).",
            },
        },
    }
    # JSON values PostgreSQL's jsonb can hold: no NUL in any text or key.
    json_text = {"type": "string", "pattern": "^[^\\x00]*$"}
    json_object = {
        "type": "object",
        "propertyNames": json_text,
        "additionalProperties": _ref("JsonValue"),
    }
    json_value = {
        "anyOf": [
            json_text,
            {"type": ["number", "boolean", "null"]},
            {"type": "array", "items": _ref("JsonValue")},
            _ref("JsonObject"),
        ]
    }
    events_array = {
        "type": "array",
        "items": _ref("Event"),
        "minItems": 1,
        "maxItems": s.max_events_per_request,
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "events",
            "version": "1",
            "description": "High-throughput event ingestion and analytics. Send batches of "
            "events to `POST /events` as JSON, NDJSON or Arrow IPC; a 202 means they are "
            "durable in RabbitMQ, and each event is stored in PostgreSQL exactly once.",
        },
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "tags": [
            {"name": "ingest"},
            {
                "name": "vendors",
                "description": "Segment's, RudderStack's, PostHog's and Amplitude's capture "
                "APIs: their SDKs need only a host setting.",
            },
            {"name": "analytics"},
            {"name": "operations"},
        ],
        "paths": {
            "/events": {
                "post": {
                    "tags": ["ingest"],
                    "security": _scoped("ingest"),
                    "summary": "Send a batch of events",
                    "description": "Valid events are accepted even when others in the same "
                    "request are refused (each refusal is listed). The answer comes once the "
                    "batch is durable in RabbitMQ (202), or with `?wait=true` once it is "
                    f"committed in PostgreSQL (200). At most {s.max_events_per_request} "
                    f"events and {s.max_body_bytes} bytes (after decompression) per request; "
                    f"an event of more than {s.max_event_bytes} bytes is refused alone. The "
                    "body may be compressed: `Content-Encoding: gzip`, `zstd`, `deflate` (or "
                    "`identity`); anything else is a 415.",
                    "parameters": [
                        {
                            "name": "wait",
                            "in": "query",
                            "description": "Answer once the batch is committed (200), or "
                            "202 with `committed: false` after the timeout. Any case; empty "
                            "means false.",
                            "schema": {
                                "type": "string",
                                "enum": ["true", "false", "1", "0", "yes", "no", "on", "off", ""],
                                "default": "false",
                            },
                        },
                        {
                            "name": "timeout",
                            "in": "query",
                            "description": "Seconds to wait with `wait=true` (more than "
                            f"{s.wait_timeout_max} is taken as {s.wait_timeout_max}).",
                            "schema": {"type": "number", "minimum": 0, "default": s.wait_timeout},
                        },
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "description": "1-255 visible ASCII characters. Same key + same "
                            f"body within {s.idempotency_ttl} s: the first answer again "
                            "(`Idempotent-Replayed: true`), nothing enqueued; the same key with "
                            "another body: 422.",
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 255,
                                "pattern": "^[\\x21-\\x7e]{1,255}$",
                            },
                        },
                        {
                            "name": "X-Request-ID",
                            "in": "header",
                            "description": "Echoed back on the answer when it is 1-128 of "
                            "`A-Z a-z 0-9 . _ : -`; otherwise (or when absent) the answer "
                            "carries one assigned by the server.",
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        events_array,
                                        {
                                            "type": "object",
                                            "required": ["events"],
                                            "properties": {"events": events_array},
                                        },
                                    ]
                                }
                            },
                            "application/x-ndjson": {
                                "schema": {
                                    **events_array,
                                    "description": "One event object per line (also sent as "
                                    "`application/jsonl`); blank lines are skipped, a malformed "
                                    "line is refused alone.",
                                }
                            },
                            "application/vnd.apache.arrow.stream": {
                                "schema": {
                                    **events_array,
                                    "description": "An Arrow IPC stream whose rows are the "
                                    "events, a column per field (event_id as string or 16-byte "
                                    "binary; occurred_at as timestamp or string; user_id as "
                                    "string or integer; event_type as string or dictionary; "
                                    "properties as JSON text or struct).",
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": _json(
                            _ref("Accepted"),
                            "Committed in PostgreSQL (`wait=true`).",
                            headers=_RATE_HEADERS,
                        ),
                        "202": _json(
                            _ref("Accepted"),
                            "Durable in RabbitMQ.",
                            headers={
                                **_RATE_HEADERS,
                                "Idempotent-Replayed": {
                                    "description": "`true` when this is a stored answer.",
                                    "schema": {"const": "true"},
                                },
                            },
                        ),
                        "400": _json(
                            {"anyOf": [_ref("Accepted"), _ref("Error")]},
                            "No valid event (`no_valid_events`; the answer lists each "
                            "refusal), or the body or a parameter cannot be used.",
                            headers=_RATE_HEADERS,
                        ),
                        "401": _UNAUTHORIZED,
                        "403": _error("The key has no `ingest` scope (`insufficient_scope`)."),
                        "408": _error("The body did not arrive in time (`request_timeout`)."),
                        "409": _error(
                            "A request with this Idempotency-Key is still running.",
                            retry_after=True,
                        ),
                        "413": _error(
                            "A size limit (`body_too_large`, `too_many_events`, "
                            "`too_many_values`, `too_many_batches`), or more events than the "
                            "rate limit's bucket (`rate_limit_exceeds_burst`)."
                        ),
                        "415": _error("Unsupported Content-Type, charset or Content-Encoding."),
                        "422": _error("This Idempotency-Key was used with another body."),
                        "429": _json(
                            _ref("Error"),
                            "The key's rate limit is reached.",
                            headers={
                                **_RATE_HEADERS,
                                "Retry-After": {"$ref": "#/components/headers/Retry-After"},
                            },
                        ),
                        "431": _HEADERS_TOO_LARGE,
                        "503": _error(
                            "RabbitMQ down, the queue full, Redis down with "
                            "EVENTS_REDIS_FAILURE=closed, or this server decoding as many "
                            "large bodies as it can hold (`overloaded`); nothing was accepted.",
                            retry_after=True,
                        ),
                    },
                }
            },
            "/stats/dau": _stats_operation(
                "Daily active users",
                "For each UTC day of the range, distinct `user_id`s with at least one "
                "counting event; every day listed, 0 when nobody was active. With "
                "`breakdown`: one series per value of `event_type` or of a property (as "
                "text, like segment values; events without it are in no series), for the "
                "`limit` values with the most distinct users over the range, ties by value "
                "ascending (`DauBreakdown`).",
                [
                    _date_param("from", "First day (alias `from_date`)."),
                    _date_param("to", "Last day, inclusive (alias `to_date`)."),
                    {
                        "name": "breakdown",
                        "in": "query",
                        "description": "`event_type` or `properties.<path>`.",
                        "schema": {"type": "string", "pattern": _BREAKDOWN_PATTERN},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "How many values a breakdown lists.",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_BREAKDOWN_LIMIT,
                            "default": 10,
                        },
                    },
                ],
                "Dau",
                s.max_query_days,
                alternative="DauBreakdown",
            ),
            "/stats/funnel": _stats_operation(
                "Funnel",
                "A user reaches step k when there are k distinct counting events e1..ek, "
                "e_i of type `steps[i]`, with occurred_at(e1) <= ... <= occurred_at(ek) and "
                "occurred_at(ek) - occurred_at(e1) <= `window` seconds. `conversion`: users "
                "/ users of step 1; `step_conversion`: users / users of the step before (0 "
                "when that is 0).",
                [
                    _date_param("from", "First day (alias `from_date`)."),
                    _date_param("to", "Last day, inclusive (alias `to_date`)."),
                    {
                        "name": "steps",
                        "in": "query",
                        "required": True,
                        "description": f"{MIN_STEPS} to {MAX_STEPS} event types: one value "
                        "separated by commas, or the parameter repeated (one type each, not "
                        "split). A type may repeat.",
                        "schema": {
                            "type": "array",
                            "items": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_VALUE_LENGTH,
                                "pattern": _STEP_PATTERN,
                            },
                            "minItems": MIN_STEPS,
                            "maxItems": MAX_STEPS,
                        },
                        "style": "form",
                        "explode": False,
                    },
                    {
                        "name": "window",
                        "in": "query",
                        "description": "Seconds from the first step to the last, at most 90 days.",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_WINDOW_SECONDS,
                            "default": DEFAULT_WINDOW_SECONDS,
                        },
                    },
                ],
                "Funnel",
                s.max_query_days,
            ),
            "/stats/active-users": _stats_operation(
                "Rolling active users (WAU, MAU)",
                "For each day d of the range, distinct users with a counting event on days "
                "[d - window + 1, d], looking back before `from`.",
                [
                    _date_param("from", "First day (alias `from_date`)."),
                    _date_param("to", "Last day, inclusive (alias `to_date`)."),
                    {
                        "name": "window",
                        "in": "query",
                        "description": "Days per window: 7 is WAU, 30 is MAU.",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_ACTIVE_WINDOW,
                            "default": 7,
                        },
                    },
                ],
                "ActiveUsers",
                s.max_query_days,
            ),
            "/stats/top-events": _stats_operation(
                "Most frequent event types",
                "Counting events per `event_type` over the range, by count descending, ties "
                "by `event_type` ascending.",
                [
                    _date_param("from", "First day (alias `from_date`)."),
                    _date_param("to", "Last day, inclusive (alias `to_date`)."),
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
                    },
                ],
                "TopEvents",
                s.max_query_days,
            ),
            "/stats/retention": _stats_operation(
                "Cohort retention",
                "The cohort: users whose first event ever falls in window 0. For each window, "
                "the share of the cohort with a counting event in it.",
                [
                    _date_param("start_date", "First day of window 0 (alias `start`)."),
                    _windows_param(s.max_query_days),
                    _GRANULARITY_PARAM,
                ],
                "Retention",
                s.max_query_days,
            ),
            "/stats/retention/cohorts": _stats_operation(
                "Retention table by cohort",
                "One cohort per start `from`, `from` + g, ... <= `to` (g: a day or a week), "
                "each exactly what `/stats/retention` answers for that `start_date`.",
                [
                    _date_param("from", "First cohort's start (alias `from_date`)."),
                    _date_param("to", "No cohort starts after it (alias `to_date`)."),
                    _windows_param(s.max_query_days),
                    _GRANULARITY_PARAM,
                ],
                "Cohorts",
                s.max_query_days,
            ),
            "/healthz": {
                "get": {
                    "tags": ["operations"],
                    "summary": "The process is alive",
                    "security": [],
                    "responses": {
                        "200": _json(
                            _ref("Health"),
                            "Alive.",
                        )
                    },
                }
            },
            "/readyz": {
                "get": {
                    "tags": ["operations"],
                    "summary": "PostgreSQL and RabbitMQ (and Redis when required) are reachable",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Ready"), "Ready."),
                        "503": _json(
                            _ref("Ready"),
                            "Not ready; `checks` says which part is unreachable.",
                            headers={"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
                        ),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "tags": ["operations"],
                    "summary": "Prometheus metrics of every process of the host",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "tags": ["operations"],
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 document.")},
                }
            },
            "/docs": {
                "get": {
                    "tags": ["operations"],
                    "summary": "This document, rendered (works offline)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "An HTML page.",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/": {
                "get": {
                    "tags": ["operations"],
                    "summary": "The dashboard (its script asks for a key with the `read` scope)",
                    "description": "A static page: daily and rolling active users, top events, "
                    "retention by cohort and a funnel, each chart with its numbers as a table. "
                    "The view is in the URL fragment (`#from=YYYY-MM-DD&to=YYYY-MM-DD&segment="
                    "...`); a `key=` there is moved to sessionStorage and sent only as the "
                    "`X-API-Key` header of the page's `/stats/*` requests.",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "An HTML page.",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "ApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": _SCOPES_DOC,
                },
                "Bearer": {"type": "http", "scheme": "bearer", "description": _SCOPES_DOC},
                "Basic": BASIC_SCHEME,
            },
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 1},
                },
                "RateLimit-Limit": {
                    "description": "The key's bucket size (events).",
                    "schema": {"type": "integer"},
                },
                "RateLimit-Remaining": {
                    "description": "Events left in the bucket.",
                    "schema": {"type": "integer"},
                },
                "RateLimit-Reset": {
                    "description": "Seconds until the bucket is full again.",
                    "schema": {"type": "integer"},
                },
            },
            "schemas": {
                "Event": event,
                "JsonObject": json_object,
                "JsonValue": json_value,
                # The answers: derived from their typed models (answer_components()).
                **answer_components(),
                # The vendors' bodies and their dialects' answers (service/openapi_vendors.py).
                **request_schemas(s, event["properties"]),
                **answer_schemas(),
            },
        },
    }
    doc["paths"].update(vendor_paths(s, event["properties"]))
    return doc


# The typed models of every answer; their component schemas come from msgspec.
ANSWERS: tuple[type[msgspec.Struct], ...] = (
    Accepted,
    Error,
    Health,
    Ready,
    Dau,
    DauBreakdown,
    TopEvents,
    Retention,
    Cohorts,
    Funnel,
    ActiveUsers,
)


def answer_components() -> dict[str, Any]:
    """The component schemas of every answer model (and of the models they hold), named
    as the classes are."""
    _, components = msgspec.json.schema_components(
        ANSWERS, ref_template="#/components/schemas/{name}"
    )
    return components
