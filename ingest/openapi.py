"""The OpenAPI 3.1 document of the HTTP API, built from the settings it describes.

Kept beside the code it documents: ``tests/ingest/test_openapi.py`` checks that every route
of the app is documented and every documented route exists, validates the document against
the OpenAPI 3.1 schema, and checks real answers against the documented response schemas.
Served at ``GET /openapi.json``; ``GET /docs`` renders it with Swagger UI, whose files ship
inside the package (``ingest/static/swagger-ui``), so the page works offline.
"""

from __future__ import annotations

from typing import Any

from core.config import Settings

_ERROR_CODES = [
    "invalid_json",
    "invalid_body",
    "invalid_arrow",
    "invalid_arrow_schema",
    "invalid_encoding",
    "empty_batch",
    "no_valid_events",
    "invalid_parameter",
    "invalid_idempotency_key",
    "unauthorized",
    "insufficient_scope",
    "not_found",
    "method_not_allowed",
    "request_timeout",
    "idempotency_key_in_flight",
    "idempotency_key_reused",
    "rate_limited",
    "headers_too_large",
    "body_too_large",
    "too_many_events",
    "too_many_values",
    "too_many_batches",
    "rate_limit_exceeds_burst",
    "unsupported_media_type",
    "unsupported_encoding",
    "unsupported_charset",
    "overloaded",
    "decoder_unavailable",
    "broker_unavailable",
    "queue_full",
    "redis_unavailable",
    "database_unavailable",
    "lake_unreadable",
    "internal_error",
    # Falcon's own errors, in the same shape
    "bad_request",
    "length_required",
    "payload_too_large",
    "too_many_requests",
    "error",
]


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


_RATE_HEADERS = {
    "RateLimit-Limit": {"$ref": "#/components/headers/RateLimit-Limit"},
    "RateLimit-Remaining": {"$ref": "#/components/headers/RateLimit-Remaining"},
    "RateLimit-Reset": {"$ref": "#/components/headers/RateLimit-Reset"},
}


def _date_param(name: str, description: str, *, required: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "string", "format": "date"},
    }


_SEGMENT_PARAMS: list[dict[str, Any]] = [
    {
        "name": "segment",
        "in": "query",
        "description": "Only count events matching `field:value`; `field` is `event_type` or "
        "`properties.<path>` (dots for nested keys). Repeatable (all must match).",
        "schema": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
        "style": "form",
        "explode": True,
    },
    {
        "name": "event_type",
        "in": "query",
        "description": "Shorthand for `segment=event_type:<value>`.",
        "schema": {"type": "string"},
    },
]


_SCOPES_DOC = (
    "A key configured as `KEY` has every scope; `KEY:ingest`, `KEY:read`, `KEY:read+admin` "
    "only those. Each operation lists the scope it needs (the role names of its security "
    "requirement); a key without it gets 403 `insufficient_scope`."
)


def _scoped(scope: str) -> list[dict[str, list[str]]]:
    """Either way of sending a key, with the scope (OpenAPI 3.1 role) the operation needs."""
    return [{"ApiKey": [scope]}, {"Bearer": [scope]}]


def _stats_operation(
    summary: str, description: str, params: list[dict[str, Any]], answer: str
) -> dict[str, Any]:
    return {
        "get": {
            "tags": ["analytics"],
            "security": _scoped("read"),
            "summary": summary,
            "description": description,
            "parameters": params + _SEGMENT_PARAMS,
            "responses": {
                "200": _json(_ref(answer), "The answer."),
                "400": _error("A parameter is missing or invalid (`invalid_parameter`)."),
                "401": _error("No API key, or an unknown one."),
                "403": _error("The key has no `read` scope (`insufficient_scope`)."),
                "503": _error(
                    "PostgreSQL cannot be read right now (`database_unavailable`), or a "
                    "lake file is missing, damaged or replaced (`lake_unreadable`); retry.",
                    retry_after=True,
                ),
            },
        }
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The document, with this deployment's limits written into it."""
    s = settings
    event = {
        "type": "object",
        "required": ["event_id", "occurred_at", "user_id", "event_type"],
        "properties": {
            "event_id": {
                "type": "string",
                "format": "uuid",
                "description": "Unique per event, for all time: a resend with the same id is "
                "stored once (first write wins).",
            },
            "occurred_at": {
                "type": "string",
                "format": "date-time",
                "description": "ISO 8601 with an offset (or `Z`); stored in UTC, microseconds. "
                f"At most {s.max_future_seconds} s in the future.",
            },
            "user_id": {
                "oneOf": [
                    {"type": "string", "minLength": 1, "maxLength": s.max_user_id_length},
                    {"type": "integer"},
                ],
                "description": "Integers are stored as their decimal text.",
            },
            "event_type": {
                "type": "string",
                "minLength": 1,
                "maxLength": s.max_event_type_length,
            },
            "properties": {
                "type": "object",
                "description": "Any JSON object (default `{}`).",
            },
        },
    }
    accepted = {
        "type": "object",
        "required": ["batch_id", "received", "accepted", "rejected"],
        "properties": {
            "batch_id": {
                "type": ["string", "null"],
                "format": "uuid",
                "description": "UUIDv7 of the accepted batch (null when nothing was accepted).",
            },
            "received": {"type": "integer", "minimum": 0},
            "accepted": {"type": "integer", "minimum": 0},
            "rejected": {"type": "array", "items": _ref("Rejection")},
            "committed": {
                "type": "boolean",
                "description": "With `?wait=true`: whether the batch was committed in time.",
            },
            "inserted": {"type": "integer", "minimum": 0},
            "duplicates": {"type": "integer", "minimum": 0},
            "error": {"type": "object"},
        },
    }
    return {
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
                    f"an event of more than {s.max_event_bytes} bytes is refused alone.",
                    "parameters": [
                        {
                            "name": "wait",
                            "in": "query",
                            "description": "Answer once the batch is committed (200), or "
                            "202 with `committed: false` after the timeout.",
                            "schema": {"type": "boolean", "default": False},
                        },
                        {
                            "name": "timeout",
                            "in": "query",
                            "description": "Seconds to wait with `wait=true` (capped at "
                            f"{s.wait_timeout_max}).",
                            "schema": {"type": "number", "minimum": 0, "default": s.wait_timeout},
                        },
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "description": "Same key + same body within "
                            f"{s.idempotency_ttl} s: the first answer again "
                            "(`Idempotent-Replayed: true`), nothing enqueued.",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        },
                        {
                            "name": "Content-Encoding",
                            "in": "header",
                            "schema": {
                                "type": "string",
                                "enum": ["gzip", "zstd", "deflate", "identity"],
                            },
                        },
                        {
                            "name": "X-Request-ID",
                            "in": "header",
                            "description": "Echoed back (or assigned) on every answer.",
                            "schema": {"type": "string", "maxLength": 128},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"type": "array", "items": _ref("Event")},
                                        {
                                            "type": "object",
                                            "required": ["events"],
                                            "properties": {
                                                "events": {
                                                    "type": "array",
                                                    "items": _ref("Event"),
                                                }
                                            },
                                        },
                                    ]
                                }
                            },
                            "application/x-ndjson": {
                                "schema": {
                                    "type": "string",
                                    "description": "One event object per line.",
                                }
                            },
                            "application/vnd.apache.arrow.stream": {
                                "schema": {
                                    "type": "string",
                                    "contentEncoding": "binary",
                                    "description": "An Arrow IPC stream with the event "
                                    "columns (event_id as string or 16-byte binary; "
                                    "occurred_at as timestamp or string; user_id as string "
                                    "or integer; event_type as string or dictionary; "
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
                                    "schema": {"type": "string"},
                                },
                            },
                        ),
                        "400": _json(
                            {"anyOf": [_ref("Accepted"), _ref("Error")]},
                            "No valid event (the answer lists each refusal), or the body or "
                            "a parameter cannot be used.",
                        ),
                        "401": _error("No API key, or an unknown one."),
                        "403": _error("The key has no `ingest` scope (`insufficient_scope`)."),
                        "408": _error("The body did not arrive in time."),
                        "409": _error(
                            "A request with this Idempotency-Key is still running.",
                            retry_after=True,
                        ),
                        "413": _error("A size limit, or more events than the rate limit's bucket."),
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
                        "431": _error("Request line and headers too large."),
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
                "counting event; every day listed, 0 when nobody was active.",
                [
                    _date_param("from", "First day (alias `from_date`)."),
                    _date_param("to", "Last day, inclusive (alias `to_date`)."),
                ],
                "Dau",
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
            ),
            "/stats/retention": _stats_operation(
                "Cohort retention",
                "The cohort: users whose first event ever falls in window 0. For each window, "
                "the share of the cohort with a counting event in it.",
                [
                    _date_param("start_date", "First day of window 0 (alias `start`)."),
                    {
                        "name": "windows",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "default": 3},
                    },
                    {
                        "name": "granularity",
                        "in": "query",
                        "description": "Window length (aliases `window_type`, `period_type`).",
                        "schema": {"type": "string", "enum": ["day", "week"], "default": "day"},
                    },
                ],
                "Retention",
            ),
            "/healthz": {
                "get": {
                    "tags": ["operations"],
                    "summary": "The process is alive",
                    "security": [],
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"status": {"const": "ok"}}},
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
                "Accepted": accepted,
                "Rejection": {
                    "type": "object",
                    "required": ["index", "code", "message"],
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "line": {"type": "integer", "minimum": 1},
                        "event_id": {},
                        "field": {"type": ["string", "null"]},
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "enum": _ERROR_CODES},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "Ready": {
                    "type": "object",
                    "required": ["status", "checks"],
                    "properties": {
                        "status": {"enum": ["ready", "unavailable"]},
                        "checks": {
                            "type": "object",
                            "additionalProperties": {"enum": ["ok", "unreachable"]},
                        },
                    },
                },
                "Dau": {
                    "type": "object",
                    "required": ["from", "to", "segments", "dau"],
                    "properties": {
                        "from": {"type": "string", "format": "date"},
                        "to": {"type": "string", "format": "date"},
                        "segments": {"type": "array", "items": {"type": "string"}},
                        "dau": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["date", "unique_users"],
                                "properties": {
                                    "date": {"type": "string", "format": "date"},
                                    "unique_users": {"type": "integer", "minimum": 0},
                                },
                            },
                        },
                    },
                },
                "TopEvents": {
                    "type": "object",
                    "required": ["from", "to", "limit", "segments", "top_events"],
                    "properties": {
                        "from": {"type": "string", "format": "date"},
                        "to": {"type": "string", "format": "date"},
                        "limit": {"type": "integer"},
                        "segments": {"type": "array", "items": {"type": "string"}},
                        "top_events": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["event_type", "count"],
                                "properties": {
                                    "event_type": {"type": "string"},
                                    "count": {"type": "integer", "minimum": 1},
                                },
                            },
                        },
                    },
                },
                "Retention": {
                    "type": "object",
                    "required": [
                        "start_date",
                        "granularity",
                        "windows",
                        "segments",
                        "cohort_size",
                        "retention",
                    ],
                    "properties": {
                        "start_date": {"type": "string", "format": "date"},
                        "granularity": {"enum": ["day", "week"]},
                        "windows": {"type": "integer"},
                        "segments": {"type": "array", "items": {"type": "string"}},
                        "cohort_size": {"type": "integer", "minimum": 0},
                        "retention": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["window", "start", "active_users", "rate"],
                                "properties": {
                                    "window": {"type": "integer", "minimum": 0},
                                    "start": {"type": "string", "format": "date"},
                                    "active_users": {"type": "integer", "minimum": 0},
                                    "rate": {"type": "number", "minimum": 0, "maximum": 1},
                                },
                            },
                        },
                    },
                },
            },
        },
    }
