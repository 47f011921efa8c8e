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
from analytics.params import parse_int, parse_range, parse_retention, parse_segments
from core.config import Settings
from ingest.errors import unavailable
from storage.lake import LakeUnreadable

log = logging.getLogger(__name__)


_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


# A lake file that is missing or damaged stays so until an operator restores it: no point
# in retrying every second.
LAKE_RETRY_AFTER = 30
_LAKE_MESSAGE = (
    "a file of the Parquet lake cannot be read (missing, damaged or replaced); the service "
    "log names it and `events lake verify` lists every such file"
)


@contextmanager
def _store_errors() -> Iterator[None]:
    """A store that cannot be read is a 503 (retry), never a 500.

    The path of an unreadable lake file goes to the log, not to the client.
    """
    try:
        yield
    except LakeUnreadable as ex:
        log.error("a lake file cannot be read", extra={"path": ex.path, "reason": ex.reason})
        raise unavailable("lake_unreadable", _LAKE_MESSAGE, retry_after=LAKE_RETRY_AFTER) from ex
    except _DB_ERRORS as ex:
        raise unavailable(
            "database_unavailable", f"PostgreSQL cannot answer right now ({type(ex).__name__})"
        ) from ex
    except duckdb.IOException as ex:  # an I/O error that no lake file explains
        log.error("a lake file cannot be read", extra={"error": str(ex)[:300]})
        raise unavailable("lake_unreadable", _LAKE_MESSAGE, retry_after=LAKE_RETRY_AFTER) from ex


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
