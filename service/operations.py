"""The operational routes: ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

``POST /events`` lives in ``ingest/events.py``.
"""

from __future__ import annotations

from typing import Literal

import falcon
import falcon.asgi
import msgspec

from core import metrics
from service.runtime import Runtime

Check = Literal["ok", "unreachable"]


class Health(msgspec.Struct, forbid_unknown_fields=True):
    """The process runs."""

    status: Literal["ok"]


class Ready(msgspec.Struct, forbid_unknown_fields=True):
    """Whether the process can take events: each dependency's state."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, Check]


def _answer(resp: falcon.asgi.Response, answer: msgspec.Struct) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = msgspec.json.encode(answer)


class HealthResource:
    """``GET /healthz``: the process is alive (no dependencies checked)."""

    auth_required = False

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        _answer(resp, Health("ok"))


class ReadyResource:
    """``GET /readyz``: PostgreSQL and RabbitMQ are reachable (503 otherwise).

    Redis is reported too; it decides readiness only with ``EVENTS_REDIS_FAILURE=closed``
    (with ``open`` the API serves without it).
    """

    auth_required = False

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        checks: dict[str, Check] = {
            "postgres": "ok" if await self._runtime.database_ready() else "unreachable",
            "rabbitmq": "ok" if await self._runtime.broker_ready() else "unreachable",
            "redis": "ok" if await self._runtime.redis_ready() else "unreachable",
        }
        needed = ["postgres", "rabbitmq"]
        if self._runtime.settings.redis_failure == "closed":
            needed.append("redis")
        ready = all(checks[name] == "ok" for name in needed)
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        if not ready:
            resp.set_header("Retry-After", "5")
        _answer(resp, Ready("ready" if ready else "unavailable", checks))


class MetricsResource:
    """``GET /metrics``: Prometheus text, summed over every process of the host, plus what
    this process reads when scraped: the queue depths and whether Redis answers a PING."""

    auth_required = False

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        depths = await self._runtime.queue_depths()
        redis_up = await self._runtime.redis_ready()
        resp.content_type = metrics.CONTENT_TYPE
        resp.data = metrics.render(depths, redis_up)
