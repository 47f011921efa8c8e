"""``GET /``: the dashboard, a static page whose script calls the ``/stats/*`` endpoints.

The page, its script and stylesheet (``static/dashboard/``) and the chart library
(``static/vendor/chart.js/``, vendored from npm with its VERSION and LICENSE) are files of the
package: nothing is fetched from another origin. The page needs no key; the script asks for
one with the ``read`` scope (or takes it from the URL fragment) and sends it only as the
``X-API-Key`` header of its own requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import falcon
import falcon.asgi

STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "dashboard" / "index.html"

# The prefixes the page's files are served under (``add_static_route``).
ASSETS_PREFIX = "/dashboard/assets"
VENDOR_PREFIX = "/dashboard/vendor"

# Everything the page loads comes from this origin; no inline script or style, no plugins,
# no framing, no form posted elsewhere. The key is never in a URL, and no Referer is sent.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class DashboardResource:
    """The page itself (no key needed: the data it shows is fetched with one)."""

    auth_required = False

    def __init__(self) -> None:
        self._body = PAGE.read_bytes()

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.cache_control = ["no-cache"]
        resp.data = self._body


class DashboardHeaders:
    """The security headers on the page and on its files (static routes have no resource
    to set them)."""

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        req_succeeded: bool,
    ) -> None:
        if req.path == "/" or req.path.startswith("/dashboard/"):
            resp.set_headers(SECURITY_HEADERS)


def add_dashboard_routes(app: falcon.asgi.App[Any, Any]) -> None:
    app.add_route("/", DashboardResource())
    app.add_static_route(ASSETS_PREFIX, str(STATIC / "dashboard"))
    app.add_static_route(VENDOR_PREFIX, str(STATIC / "vendor"))
