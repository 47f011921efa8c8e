"""API keys: ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import falcon.asgi

from ingest.errors import ApiError

ANONYMOUS = "anonymous"


def key_id(key: str) -> str:
    """A stable, non-secret name for a key (logged and stored instead of the key)."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:12]


def presented_key(req: falcon.asgi.Request) -> str | None:
    key = req.get_header("X-API-Key")
    if key:
        return key.strip()
    auth = req.get_header("Authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


class AuthMiddleware:
    """Sets ``req.context.key_id`` or answers 401, for resources with ``auth_required``."""

    def __init__(self, keys: tuple[str, ...], *, allow_no_auth: bool = False) -> None:
        self._keys = [(k.encode(), key_id(k)) for k in keys]
        self._open = not keys and allow_no_auth

    def identify(self, presented: str | None) -> str | None:
        """The key id of a presented key, or None. Checks every key, whatever matches."""
        if self._open:
            return ANONYMOUS
        if not presented:
            return None
        candidate = presented.encode()
        found = None
        for key, kid in self._keys:
            if hmac.compare_digest(key, candidate):
                found = kid
        return found

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        params: dict[str, Any],
    ) -> None:
        if not getattr(resource, "auth_required", True):
            return
        kid = self.identify(presented_key(req))
        if kid is None:
            raise ApiError(
                401,
                "unauthorized",
                "missing or invalid API key: send X-API-Key: <key> or Authorization: Bearer <key>",
                headers={"WWW-Authenticate": 'Bearer realm="events"'},
            )
        req.context.key_id = kid
