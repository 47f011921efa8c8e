"""The Falcon ASGI application: ``create_app(settings)``.

gunicorn runs ``service.app:create_app_from_env()`` (see ``gunicorn.conf.py``).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import falcon
import falcon.asgi
import falcon.media
import orjson

from analytics.http import add_routes
from core import metrics
from core.codes import ErrorCode, Refusal
from core.config import Settings, load_settings
from core.logs import configure_logging
from ingest.events import EventsResource
from ingest.vendors.routes import add_vendor_routes
from service import errors
from service.api_docs import add_doc_routes
from service.auth import AuthMiddleware
from service.cors import CaptureCors
from service.dashboard import DashboardHeaders, add_dashboard_routes
from service.operations import HealthResource, MetricsResource, ReadyResource
from service.runtime import Runtime

log = logging.getLogger("ingest.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# C0 and C1 control characters and DEL: never meaningful in a query parameter, and NUL is
# refused by PostgreSQL's text type (a 5xx from the database is not the client's answer).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def utc_now() -> datetime:
    return datetime.now(UTC)


class DialectMiddleware:
    """Answer a refusal made before the route runs (a query parameter, ...) in the route's
    dialect (``ingest/dialects.py``): a vendor's SDK reads only its vendor's form. The route
    sets it again itself; ``/batch`` changes it once the body says whose it is."""

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        params: dict[str, Any],
    ) -> None:
        dialect = getattr(resource, "dialect", None)
        if dialect is not None:
            req.context.dialect = dialect


class QueryGuard:
    """400 ``invalid_parameter`` for a control character in any query parameter's name or
    value, once the key is checked and before the route looks at them."""

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        params: dict[str, Any],
    ) -> None:
        if not req.query_string:
            return
        for name, value in req.params.items():
            values = value if isinstance(value, list) else [value]
            if _CONTROL.search(name) or any(_CONTROL.search(v) for v in values):
                raise Refusal(
                    ErrorCode.INVALID_PARAMETER,
                    "query parameters must not contain control characters (such as NUL)",
                    parameter=_CONTROL.sub("?", name)[:64],
                )


class RequestLogMiddleware:
    """Echo/assign ``X-Request-ID`` and log one structured line per request."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.started = time.perf_counter()
        given = req.get_header("X-Request-ID")
        req.context.request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        resp.set_header("X-Request-ID", req.context.request_id)

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        req_succeeded: bool,
    ) -> None:
        started = req.context.get("started")
        status = int(str(resp.status).split(" ", 1)[0])
        elapsed = time.perf_counter() - started if started else 0.0
        # The route template, never the raw path: unknown paths must not create label values.
        route = req.uri_template if resource is not None else "unmatched"
        metrics.REQUESTS.labels(route=route, method=req.method, status=str(status)).observe(elapsed)
        log.info(
            "request",
            extra={
                "method": req.method,
                "path": req.path,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2) if started else None,
                "events": req.context.get("events"),
                "key_id": req.context.get("key_id"),
                "request_id": req.context.get("request_id"),
            },
        )


def _json_handler() -> falcon.media.JSONHandler:
    return falcon.media.JSONHandler(
        dumps=partial(orjson.dumps, option=orjson.OPT_NON_STR_KEYS),
        loads=orjson.loads,
    )


def create_app(
    settings: Settings, *, clock: Callable[[], datetime] = utc_now
) -> falcon.asgi.App[Any, Any]:
    """Build the ASGI app; connections open on the ASGI lifespan start-up event."""
    settings.require_auth()
    runtime = Runtime(settings)
    auth = AuthMiddleware(settings.keys, allow_no_auth=settings.allow_no_auth)
    middleware: list[Any] = [
        RequestLogMiddleware(),
        DashboardHeaders(),
        CaptureCors(),
        runtime,
        DialectMiddleware(),
        auth,
        QueryGuard(),
    ]
    app: falcon.asgi.App[Any, Any] = falcon.asgi.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True  # /events/ is /events, no redirect
    handler = _json_handler()
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.req_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.add_route("/events", EventsResource(settings, runtime, clock))
    add_vendor_routes(app, settings, runtime, clock, auth)
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(runtime))
    app.add_route("/metrics", MetricsResource(runtime))
    add_doc_routes(app, settings)
    add_dashboard_routes(app)
    add_routes(app, settings, runtime.analytics)
    errors.register(app)  # the one table of errors and their answers
    return app


def create_app_from_env() -> falcon.asgi.App[Any, Any]:
    """The app configured from the environment (gunicorn's entry point)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
