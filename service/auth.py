"""API keys: ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``, compared in constant time.

Each key grants scopes (``API_KEYS=KEY:ingest+read``); each resource names the scope it
needs (``required_scope``). Mobile and web apps ship their ingest key inside the app, so a
key with only ``ingest`` must not read analytics: it gets 403 ``insufficient_scope``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import falcon.asgi

from core.codes import ErrorCode, Refusal
from core.config import SCOPES, ApiKey

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
    """Sets ``req.context.key_id`` or answers 401 (no or unknown key) or 403 (the key lacks
    the resource's ``required_scope``), for resources with ``auth_required``."""

    def __init__(self, keys: tuple[ApiKey, ...], *, allow_no_auth: bool = False) -> None:
        self._keys = [(k.secret.encode(), key_id(k.secret), k.scopes) for k in keys]
        self._open = not keys and allow_no_auth

    def identify(self, presented: str | None) -> tuple[str, frozenset[str]] | None:
        """The key id and scopes of a presented key, or None. Checks every key, whatever
        matches (constant time)."""
        if self._open:
            return ANONYMOUS, frozenset(SCOPES)
        if not presented:
            return None
        candidate = presented.encode()
        found = None
        for key, kid, scopes in self._keys:
            if hmac.compare_digest(key, candidate):
                found = kid, scopes
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
        identified = self.identify(presented_key(req))
        if identified is None:
            raise Refusal(
                ErrorCode.UNAUTHORIZED,
                "missing or invalid API key: send X-API-Key: <key> or Authorization: Bearer <key>",
                headers={"WWW-Authenticate": 'Bearer realm="events"'},
            )
        kid, scopes = identified
        req.context.key_id = kid
        # Fail closed: a route that names no scope is an operator's (admin) route.
        required = getattr(resource, "required_scope", "admin")
        if required not in scopes:
            raise Refusal(
                ErrorCode.INSUFFICIENT_SCOPE,
                f"this API key may not do this: it needs the {required!r} scope "
                f"(it has: {', '.join(sorted(scopes)) or 'none'})",
                required_scope=required,
            )
