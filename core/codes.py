"""The error contract: every ``error.code`` the service answers, its status and meaning.

One enum for the code that raises a refusal, the error table that answers it
(``service/errors.py``), the OpenAPI document and the README's error table. A refusal names a
code, never a status: the status comes with the code, so modules that are not HTTP code say
what went wrong and the composition root says how that is answered.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import msgspec

from core.errors import ServiceError


class ErrorCode(StrEnum):
    """An error code, with the HTTP status it is answered with and what it means."""

    status: int
    meaning: str

    def __new__(cls, value: str, status: int, meaning: str) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        member.meaning = meaning
        return member

    # 400: the body or a parameter cannot be used
    INVALID_JSON = "invalid_json", 400, "the body is not valid JSON"
    INVALID_BODY = "invalid_body", 400, "the body is JSON but not an array of events"
    INVALID_ARROW = "invalid_arrow", 400, "the body is not a usable Arrow IPC stream"
    INVALID_ARROW_SCHEMA = "invalid_arrow_schema", 400, "the Arrow columns cannot hold events"
    INVALID_ENCODING = "invalid_encoding", 400, "the body does not decompress"
    EMPTY_BATCH = "empty_batch", 400, "the request holds no event"
    NO_VALID_EVENTS = "no_valid_events", 400, "none of the events is valid (see `rejected`)"
    INVALID_PARAMETER = "invalid_parameter", 400, "a query parameter cannot be used"
    INVALID_IDEMPOTENCY_KEY = (
        "invalid_idempotency_key",
        400,
        "`Idempotency-Key` is not 1-255 visible ASCII characters",
    )
    BAD_REQUEST = "bad_request", 400, "a request Falcon itself cannot read"
    # 401 / 403: who asks
    UNAUTHORIZED = "unauthorized", 401, "no API key, or an unknown one"
    INSUFFICIENT_SCOPE = "insufficient_scope", 403, "the key lacks the route's scope"
    # 404 / 405 / 408 / 409 / 411
    NOT_FOUND = "not_found", 404, "no such route"
    METHOD_NOT_ALLOWED = "method_not_allowed", 405, "the route does not take this method"
    REQUEST_TIMEOUT = "request_timeout", 408, "headers or body not received in time"
    IDEMPOTENCY_KEY_IN_FLIGHT = (
        "idempotency_key_in_flight",
        409,
        "a request with the same `Idempotency-Key` is still running",
    )
    LENGTH_REQUIRED = "length_required", 411, "a body without a length Falcon cannot read"
    # 413: a limit
    BODY_TOO_LARGE = "body_too_large", 413, "the body, inflated or expanded, is over a limit"
    TOO_MANY_EVENTS = "too_many_events", 413, "more events than one request may hold"
    TOO_MANY_VALUES = "too_many_values", 413, "more JSON values than one body may hold"
    TOO_MANY_BATCHES = "too_many_batches", 413, "more Arrow record batches than one body may hold"
    RATE_LIMIT_EXCEEDS_BURST = (
        "rate_limit_exceeds_burst",
        413,
        "more events in one request than the key's rate-limit bucket holds",
    )
    PAYLOAD_TOO_LARGE = "payload_too_large", 413, "a body Falcon itself refused as too large"
    # 415 / 422 / 429 / 431
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", 415, "not JSON, NDJSON or Arrow"
    UNSUPPORTED_ENCODING = "unsupported_encoding", 415, "not gzip, zstd or deflate"
    UNSUPPORTED_CHARSET = "unsupported_charset", 415, "not UTF-8"
    IDEMPOTENCY_KEY_REUSED = (
        "idempotency_key_reused",
        422,
        "the `Idempotency-Key` was used with another body",
    )
    RATE_LIMITED = "rate_limited", 429, "the key's token bucket is empty"
    TOO_MANY_REQUESTS = "too_many_requests", 429, "Falcon's own 429"
    HEADERS_TOO_LARGE = "headers_too_large", 431, "request line and headers over the limit"
    # 5xx: an outage or a capacity limit of this server; retry
    INTERNAL_ERROR = "internal_error", 500, "a bug; it has been logged with the request id"
    OVERLOADED = "overloaded", 503, "the process holds as many bodies as its decode budget"
    DECODER_UNAVAILABLE = "decoder_unavailable", 503, "a decoding process died"
    BROKER_UNAVAILABLE = "broker_unavailable", 503, "RabbitMQ is unreachable"
    QUEUE_FULL = "queue_full", 503, "the queue is at its length limit (backpressure)"
    REDIS_UNAVAILABLE = "redis_unavailable", 503, "Redis is down and EVENTS_REDIS_FAILURE=closed"
    DATABASE_UNAVAILABLE = "database_unavailable", 503, "PostgreSQL cannot answer"
    LAKE_UNREADABLE = "lake_unreadable", 503, "a lake file is missing, damaged or replaced"
    TOO_MANY_QUERIES = "too_many_queries", 503, "as many analytics queries run as allowed"
    QUERY_TIMEOUT = "query_timeout", 503, "the query took longer than EVENTS_QUERY_TIMEOUT"
    QUERY_TOO_LARGE = "query_too_large", 503, "the query needs more memory than allowed"
    ERROR = "error", 500, "any other status Falcon itself answers"


class Refusal(ServiceError):
    """A request refused: a code (which brings its status), a message for people, details
    for programs (``parameter``, ``limit``, ...), and for one worth retrying the seconds
    after which to retry (``retry_in``: the ``Retry-After`` header)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retry_in: int | None = None,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        if retry_in is not None:
            self.headers["Retry-After"] = str(retry_in)
        self.details = details

    @property
    def status(self) -> int:
        return self.code.status

    def answer(self) -> Error:
        """The answer as its typed model (a detail it does not declare is a bug: TypeError)."""
        return Error(ErrorDetail(self.code, self.message, **self.details))

    def body(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.answer())  # type: ignore[no-any-return]

    def __reduce__(self) -> Any:
        # Decoding runs in other processes too: the refusal must survive pickling whole.
        return _rebuild, (type(self), (self.code, self.message, self.headers, self.details))


def _rebuild(
    cls: type[Refusal], state: tuple[ErrorCode, str, dict[str, str], dict[str, Any]]
) -> Refusal:
    code, message, headers, details = state
    refusal = Refusal.__new__(cls)
    Refusal.__init__(refusal, code, message, headers=headers, **details)
    return refusal


class ErrorDetail(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What went wrong: the code, a message for people, and the details a program needs."""

    code: ErrorCode
    message: str
    parameter: Annotated[
        str | msgspec.UnsetType, msgspec.Meta(description="`invalid_parameter`: which one.")
    ] = msgspec.UNSET
    limit: Annotated[
        int | msgspec.UnsetType, msgspec.Meta(description="A 413: the limit that was passed.")
    ] = msgspec.UNSET
    supported: Annotated[
        list[str] | msgspec.UnsetType,
        msgspec.Meta(description="A 415: what would have been understood."),
    ] = msgspec.UNSET
    required_scope: Annotated[
        str | msgspec.UnsetType,
        msgspec.Meta(description="`insufficient_scope`: the scope the route needs."),
    ] = msgspec.UNSET
    retry_after: Annotated[
        int | msgspec.UnsetType,
        msgspec.Meta(description="`rate_limited`: seconds until the request would pass."),
    ] = msgspec.UNSET
    request_id: Annotated[
        str | msgspec.UnsetType | None,
        msgspec.Meta(description="`internal_error`: the request id the log line carries."),
    ] = msgspec.UNSET


class Error(msgspec.Struct, forbid_unknown_fields=True):
    """Every error answer: ``{"error": {"code", "message", ...}}``."""

    error: ErrorDetail
