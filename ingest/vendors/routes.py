"""The vendors' capture routes: their SDKs need only a host setting.

| vendor | routes | key |
|---|---|---|
| Segment, RudderStack | ``POST /v1/batch``, ``/v1/track``, ``/v1/identify``, ``/v1/page``, ``/v1/screen``, ``/v1/group``, ``/v1/alias`` | Basic user name, or ``writeKey`` |
| PostHog | ``POST /batch/``, ``/capture/``, ``/e/``, ``/i/v0/e/`` | ``api_key`` or ``token`` in the body |
| Amplitude | ``POST /2/httpapi``, ``/batch`` | ``api_key`` in the body |

``/batch`` and ``/batch/`` are one path (trailing slashes are stripped): a body with
``events`` at its top is Amplitude's, any other PostHog's. Any route also takes our own
``X-API-Key`` / ``Authorization: Bearer`` headers. Each key is one of ours with the
``ingest`` scope.
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import falcon
import falcon.asgi

from core.codes import ErrorCode, Refusal
from core.config import Settings
from ingest.dialects import AMPLITUDE, POSTHOG, SEGMENT, Dialect
from ingest.events import CaptureResource, IngestRuntime, KeyBook
from ingest.media import JSON
from ingest.vendors import segment
from ingest.vendors.decode import AUTO

# What the vendors' SDKs send: JSON, as application/json or (posthog-js) text/plain.
_JSON_TYPES = ("application/json", "text/plain")
# PostHog's ``?compression=``: gzip-js is posthog-js's gzip; its lz64 and base64 bodies are
# not read.
_POSTHOG_COMPRESSION = {"gzip-js": "gzip", "gzip": "gzip"}
_GZIP_MAGIC = b"\x1f\x8b"


class VendorResource(CaptureResource):
    """A vendor's capture route: its JSON, our pipeline, its dialect."""

    auth_required = False  # the key may be in the body: the route finds it (``KeyBook``)

    def __init__(
        self,
        settings: Settings,
        runtime: IngestRuntime,
        clock: Callable[[], datetime],
        keys: KeyBook,
        *,
        dialect: Dialect,
        route: str,
    ) -> None:
        super().__init__(settings, runtime, clock, keys)
        self.dialect = dialect
        self.route = route

    def media(self, req: falcon.asgi.Request) -> str:
        if not req.content_type:
            return JSON
        base, _, params = req.content_type.partition(";")
        if base.strip().lower() not in _JSON_TYPES:
            raise Refusal(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type {base.strip()[:64]!r} is not supported here; send JSON",
                supported=list(_JSON_TYPES),
            )
        for param in params.split(";"):
            name, _, value = param.partition("=")
            charset = value.strip().strip('"').lower()
            if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
                raise Refusal(
                    ErrorCode.UNSUPPORTED_CHARSET,
                    f"charset {charset[:32]!r} is not supported; send UTF-8",
                )
        return JSON


class PostHogResource(VendorResource):
    def content_encoding(self, req: falcon.asgi.Request, raw: bytes) -> str | None:
        """The header, else ``?compression=``, else gzip when the body is gzip: posthog-js
        sends its gzip-js bodies as text/plain with neither (no JSON text begins with
        gzip's magic bytes)."""
        header = req.get_header("Content-Encoding")
        compression = req.get_param("compression")
        if header:
            return header
        if not compression:
            return "gzip" if raw.startswith(_GZIP_MAGIC) else None
        try:
            return _POSTHOG_COMPRESSION[compression.strip().lower()]
        except KeyError:
            raise Refusal(
                ErrorCode.UNSUPPORTED_ENCODING,
                f"compression {compression[:32]!r} is not supported; use gzip-js",
                supported=sorted(_POSTHOG_COMPRESSION),
            ) from None


def add_vendor_routes(
    app: falcon.asgi.App[Any, Any],
    settings: Settings,
    runtime: IngestRuntime,
    clock: Callable[[], datetime],
    keys: KeyBook,
) -> None:
    def route(cls: type[VendorResource], dialect: Dialect, name: str) -> VendorResource:
        return cls(settings, runtime, clock, keys, dialect=dialect, route=name)

    app.add_route("/v1/batch", route(VendorResource, SEGMENT, "segment:batch"))
    for call in segment.CALLS:
        app.add_route(f"/v1/{call}", route(VendorResource, SEGMENT, f"segment:{call}"))
    for path in ("/capture", "/e", "/i/v0/e"):
        app.add_route(path, route(PostHogResource, POSTHOG, "posthog:capture"))
    app.add_route("/batch", route(PostHogResource, POSTHOG, f"{AUTO}:batch"))
    app.add_route("/2/httpapi", route(VendorResource, AMPLITUDE, "amplitude:batch"))
