"""``GET /openapi.json`` and ``GET /docs`` (Swagger UI from files shipped in the package)."""

from __future__ import annotations

from pathlib import Path

import falcon
import falcon.asgi
import orjson

from core.config import Settings
from service.openapi import openapi_document

ASSETS = Path(__file__).parent / "static" / "swagger-ui"

_PAGE = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>events API</title>
  <link rel="icon" href="/docs/assets/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui", deepLinking: true});
  </script>
</body>
</html>
"""


class OpenApiResource:
    auth_required = False

    def __init__(self, settings: Settings) -> None:
        self._body = orjson.dumps(openapi_document(settings))

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body


class DocsResource:
    auth_required = False

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.data = _PAGE


def add_doc_routes(app: falcon.asgi.App, settings: Settings) -> None:  # type: ignore[type-arg]
    app.add_route("/openapi.json", OpenApiResource(settings))
    app.add_route("/docs", DocsResource())
    app.add_static_route("/docs/assets", str(ASSETS))
