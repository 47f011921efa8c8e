"""``GET /stats/dau`` (with ``breakdown``), ``/stats/top-events``, ``/stats/retention``,
``/stats/retention/cohorts``, ``/stats/funnel``, ``/stats/active-users`` (``read`` scope).

What a query can fail with is a domain error (``analytics/limits.py``, ``LakeUnreadable``);
``service/errors.py`` answers it.
"""

from __future__ import annotations

from typing import Any

import falcon.asgi
import msgspec

from analytics.engine import Analytics
from analytics.params import (
    parse_active_users,
    parse_breakdown,
    parse_cohorts,
    parse_funnel,
    parse_int,
    parse_range,
    parse_retention,
    parse_segments,
)
from core.config import Settings


def _answer(resp: falcon.asgi.Response, answer: msgspec.Struct) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = msgspec.json.encode(answer)


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
        breakdown = parse_breakdown(params)
        if breakdown is None:
            _answer(resp, await self._analytics.dau(days, segments))
        else:
            _answer(resp, await self._analytics.dau_breakdown(days, breakdown, segments))


class TopEventsResource(_StatsResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        params = self._params(req)
        days = parse_range(params, self._max_days)
        limit = parse_int(params, "limit", 10, 1, 1000)
        segments = parse_segments(params)
        _answer(resp, await self._analytics.top_events(days, limit, segments))


class RetentionResource(_StatsResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        query = parse_retention(self._params(req), self._max_days)
        _answer(resp, await self._analytics.retention(query))


class CohortsResource(_StatsResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        query = parse_cohorts(self._params(req), self._max_days)
        _answer(resp, await self._analytics.cohorts(query))


class FunnelResource(_StatsResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        query = parse_funnel(self._params(req), self._max_days)
        _answer(resp, await self._analytics.funnel(query))


class ActiveUsersResource(_StatsResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        query = parse_active_users(self._params(req), self._max_days)
        _answer(resp, await self._analytics.active_users(query))


def add_routes(app: falcon.asgi.App[Any, Any], settings: Settings, analytics: Analytics) -> None:
    app.add_route("/stats/dau", DauResource(settings, analytics))
    app.add_route("/stats/top-events", TopEventsResource(settings, analytics))
    app.add_route("/stats/retention", RetentionResource(settings, analytics))
    app.add_route("/stats/retention/cohorts", CohortsResource(settings, analytics))
    app.add_route("/stats/funnel", FunnelResource(settings, analytics))
    app.add_route("/stats/active-users", ActiveUsersResource(settings, analytics))
