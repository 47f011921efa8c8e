"""``GET /stats/dau``, ``GET /stats/top-events``, ``GET /stats/retention`` (API key required)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import duckdb
import falcon.asgi

from analytics.engine import Analytics
from analytics.limits import QueryTimeout, QueryTooLarge, TooManyQueries
from analytics.params import parse_int, parse_range, parse_retention, parse_segments
from core.codes import ErrorCode, Refusal
from core.config import Settings
from storage.errors import DB_ERRORS
from storage.lake import LakeUnreadable

log = logging.getLogger(__name__)


# A lake file that is missing or damaged stays so until an operator restores it: no point
# in retrying every second.
LAKE_RETRY_AFTER = 30
_LAKE_MESSAGE = (
    "a file of the Parquet lake cannot be read (missing, damaged or replaced); the service "
    "log names it and `events lake verify` lists every such file"
)


# SQLSTATE classes of errors the request's own values cause (a segment value jsonb cannot
# hold, a number out of range): the client's to fix, not an outage.
_INPUT_CLASSES = ("22", "54")


@contextmanager
def _store_errors() -> Iterator[None]:
    """Each way a query can fail, as its answer: the request's fault is a 400, a limit or an
    outage a 503 with Retry-After, never a 500 (a bug stays one).

    The path of an unreadable lake file goes to the log, not to the client.
    """
    try:
        yield
    except TooManyQueries as ex:
        raise Refusal(
            ErrorCode.TOO_MANY_QUERIES,
            "this server is running as many analytics queries as it allows; retry shortly",
            retry_in=1,
        ) from ex
    except QueryTimeout as ex:
        raise _timeout() from ex
    except QueryTooLarge as ex:
        log.warning("an analytics query needed more memory than allowed", extra={"error": str(ex)})
        raise Refusal(
            ErrorCode.QUERY_TOO_LARGE,
            "the query needs more memory than this server gives analytics; ask for fewer days "
            "or segments, or retry when fewer queries run",
            retry_in=5,
        ) from ex
    except LakeUnreadable as ex:
        log.error("a lake file cannot be read", extra={"path": ex.path, "reason": ex.reason})
        raise Refusal(ErrorCode.LAKE_UNREADABLE, _LAKE_MESSAGE, retry_in=LAKE_RETRY_AFTER) from ex
    except asyncpg.QueryCanceledError as ex:  # statement_timeout: the deadline passed
        raise _timeout() from ex
    except asyncpg.PostgresError as ex:
        if str(ex.sqlstate or "")[:2] in _INPUT_CLASSES:
            raise Refusal(
                ErrorCode.INVALID_PARAMETER, f"a parameter cannot be used: {ex}"[:300]
            ) from ex
        raise Refusal(
            ErrorCode.DATABASE_UNAVAILABLE,
            f"PostgreSQL cannot answer right now ({type(ex).__name__})",
            retry_in=1,
        ) from ex
    except DB_ERRORS as ex:
        raise Refusal(
            ErrorCode.DATABASE_UNAVAILABLE,
            f"PostgreSQL cannot answer right now ({type(ex).__name__})",
            retry_in=1,
        ) from ex
    except (duckdb.ConversionException, duckdb.OutOfRangeException) as ex:
        raise Refusal(ErrorCode.INVALID_PARAMETER, "a parameter cannot be used") from ex
    except duckdb.IOException as ex:  # an I/O error that no lake file explains
        log.error("a lake file cannot be read", extra={"error": str(ex)[:300]})
        raise Refusal(ErrorCode.LAKE_UNREADABLE, _LAKE_MESSAGE, retry_in=LAKE_RETRY_AFTER) from ex


def _timeout() -> Refusal:
    return Refusal(
        ErrorCode.QUERY_TIMEOUT,
        "the query did not finish within EVENTS_QUERY_TIMEOUT and was stopped; ask for fewer "
        "days, or retry when the server is less busy",
        retry_in=5,
    )


class _StatsResource:
    required_scope = "read"

    def __init__(self, settings: Settings, analytics: Analytics) -> None:
        self._max_days = settings.max_query_days
        self._analytics = analytics

    @staticmethod
    def _params(req: falcon.asgi.Request) -> dict[str, Any]:
        return dict(req.params)


class DauResource(_StatsResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        params = self._params(req)
        days = parse_range(params, self._max_days)
        segments = parse_segments(params)
        with _store_errors():
            resp.media = await self._analytics.dau(days, segments)


class TopEventsResource(_StatsResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        params = self._params(req)
        days = parse_range(params, self._max_days)
        limit = parse_int(params, "limit", 10, 1, 1000)
        segments = parse_segments(params)
        with _store_errors():
            resp.media = await self._analytics.top_events(days, limit, segments)


class RetentionResource(_StatsResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        query = parse_retention(self._params(req), self._max_days)
        with _store_errors():
            resp.media = await self._analytics.retention(query)


def add_routes(app: falcon.asgi.App[Any, Any], settings: Settings, analytics: Analytics) -> None:
    app.add_route("/stats/dau", DauResource(settings, analytics))
    app.add_route("/stats/top-events", TopEventsResource(settings, analytics))
    app.add_route("/stats/retention", RetentionResource(settings, analytics))
