"""The one table of errors and their answers, registered with Falcon's ``add_error_handler``.

Stage packages raise what went wrong in their own terms: a ``Refusal`` naming an
``ErrorCode`` (``core/codes.py``), or a domain exception (the query's deadline passed, the
broker is down, a lake file is unreadable, ...). This module says how each is answered:
status (from the code), body ``{"error": {"code", "message", ...}}``, ``Retry-After`` where a
retry helps, and what is logged. Falcon's own errors (404, 405) get the same shape; anything
else is a bug: 500 ``internal_error``, logged with the request id, no detail in the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import falcon
import falcon.asgi
import orjson

from analytics.limits import (
    InvalidQueryValue,
    QueryTimeout,
    QueryTooLarge,
    StoreUnavailable,
    TooManyQueries,
)
from core.codes import ErrorCode, Refusal
from ingest.dialects import NATIVE
from ingest.ratelimit import RedisUnavailable
from pipeline.publisher import BrokerUnavailable, QueueFull
from storage.lake import LakeUnreadable

log = logging.getLogger("ingest.access")

# A lake file that is missing or damaged stays so until an operator restores it: no point in
# retrying every second.
LAKE_RETRY_AFTER = 30
_LAKE_MESSAGE = (
    "a file of the Parquet lake cannot be read (missing, damaged or replaced); the service "
    "log names it and `events lake verify` lists every such file"
)


def _lake_unreadable(ex: LakeUnreadable) -> Refusal:
    log.error("a lake file cannot be read", extra={"path": ex.path, "reason": ex.reason})
    return Refusal(ErrorCode.LAKE_UNREADABLE, _LAKE_MESSAGE, retry_in=LAKE_RETRY_AFTER)


def _query_too_large(ex: QueryTooLarge) -> Refusal:
    log.warning("an analytics query needed more memory than allowed", extra={"error": str(ex)})
    return Refusal(
        ErrorCode.QUERY_TOO_LARGE,
        "the query needs more memory than this server gives analytics; ask for fewer days or "
        "segments, or retry when fewer queries run",
        retry_in=5,
    )


# Domain exception -> its answer. Falcon picks the entry of the most specific class.
ANSWERS: dict[type[Exception], Callable[[Any], Refusal]] = {
    TooManyQueries: lambda ex: Refusal(
        ErrorCode.TOO_MANY_QUERIES,
        "this server is running as many analytics queries as it allows; retry shortly",
        retry_in=1,
    ),
    QueryTimeout: lambda ex: Refusal(
        ErrorCode.QUERY_TIMEOUT,
        "the query did not finish within EVENTS_QUERY_TIMEOUT and was stopped; ask for fewer "
        "days, or retry when the server is less busy",
        retry_in=5,
    ),
    QueryTooLarge: _query_too_large,
    StoreUnavailable: lambda ex: Refusal(ErrorCode.DATABASE_UNAVAILABLE, str(ex), retry_in=1),
    InvalidQueryValue: lambda ex: Refusal(ErrorCode.INVALID_PARAMETER, str(ex)),
    LakeUnreadable: _lake_unreadable,
    QueueFull: lambda ex: Refusal(
        ErrorCode.QUEUE_FULL, "the queue is full; nothing was accepted, retry later", retry_in=5
    ),
    BrokerUnavailable: lambda ex: Refusal(
        ErrorCode.BROKER_UNAVAILABLE,
        f"the queue is unavailable, nothing was accepted; retry ({ex})",
        retry_in=2,
    ),
    RedisUnavailable: lambda ex: Refusal(
        ErrorCode.REDIS_UNAVAILABLE,
        "rate limits and idempotency cannot be checked (Redis is unreachable)",
        retry_in=2,
    ),
}


def _answer(req: falcon.asgi.Request, resp: falcon.asgi.Response, refusal: Refusal) -> None:
    """The refusal in the form of the route's dialect: ours, or that of the vendor whose
    SDK called (``ingest/dialects.py``)."""
    dialect = req.context.get("dialect") or NATIVE
    status, body, headers = dialect.refused(refusal)
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = body
    for name, value in headers.items():
        resp.set_header(name, value)


async def _refused(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Refusal, params: dict[str, Any]
) -> None:
    _answer(req, resp, ex)


def _domain(
    to_refusal: Callable[[Any], Refusal],
) -> Callable[..., Any]:
    async def handle(
        req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception, params: Any
    ) -> None:
        _answer(req, resp, to_refusal(ex))

    return handle


async def _unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception, params: dict[str, Any]
) -> None:
    log.exception("unhandled error", extra={"request_id": req.context.get("request_id")})
    resp.status = falcon.HTTP_500
    resp.media = {
        "error": {
            "code": ErrorCode.INTERNAL_ERROR.value,
            "message": "an internal error occurred; it has been logged",
            "request_id": req.context.get("request_id"),
        }
    }


# Falcon's own errors (404, 405, ...) keep their status but get our body shape.
_FALCON_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    408: ErrorCode.REQUEST_TIMEOUT,
    411: ErrorCode.LENGTH_REQUIRED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorCode.TOO_MANY_REQUESTS,
}


def falcon_error_body(error: falcon.HTTPError) -> dict[str, Any]:
    code = _FALCON_CODES.get(error.status_code, ErrorCode.ERROR)
    message = error.description or error.title or code.value
    return {"error": {"code": code.value, "message": message}}


def _serialize_falcon_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError
) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(falcon_error_body(ex))


def register(app: falcon.asgi.App[Any, Any]) -> None:
    """Answer every error from this table (registered general first: the most specific
    class wins)."""
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(Refusal, _refused)
    for exception, to_refusal in ANSWERS.items():
        app.add_error_handler(exception, _domain(to_refusal))
    app.set_error_serializer(_serialize_falcon_error)
