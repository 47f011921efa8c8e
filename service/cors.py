"""CORS on the capture routes, so browser SDKs (posthog-js, Amplitude Browser, analytics.js)
can send from a site's own origin.

A capture route (``cors = True``: ``POST /events`` and every vendor route) answers any
origin: its keys are ``ingest`` keys, which ship inside apps and are public in effect, and no
cookie or ambient credential is involved (``Access-Control-Allow-Credentials`` is never
sent). A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered 204 with
the methods and headers a capture request may use, before the key is checked (browsers send
no key on a preflight). Analytics routes stay same-origin: a read key belongs on a server or
in the dashboard this service serves.
"""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

ALLOWED_HEADERS = (
    "Content-Type",
    "Content-Encoding",
    "Authorization",
    "X-API-Key",
    "Idempotency-Key",
    "X-Request-ID",
)
EXPOSED_HEADERS = (
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-Request-ID",
    "Idempotent-Replayed",
)
MAX_AGE = 86_400  # seconds a browser may keep a preflight's answer


def is_preflight(req: falcon.asgi.Request) -> bool:
    return req.method == "OPTIONS" and req.get_header("Access-Control-Request-Method") is not None


class CaptureCors:
    """The CORS headers of the capture routes (resources with ``cors = True``)."""

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        req_succeeded: bool,
    ) -> None:
        if not getattr(resource, "cors", False):
            return
        resp.set_header("Access-Control-Allow-Origin", "*")
        if is_preflight(req):
            resp.status = falcon.HTTP_204
            resp.data = b""
            resp.set_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            resp.set_header("Access-Control-Allow-Headers", ", ".join(ALLOWED_HEADERS))
            resp.set_header("Access-Control-Max-Age", str(MAX_AGE))
        else:
            resp.set_header("Access-Control-Expose-Headers", ", ".join(EXPOSED_HEADERS))
        resp.append_header("Vary", "Origin")
