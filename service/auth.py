"""API keys: ``X-API-Key: KEY``, ``Authorization: Bearer KEY`` or ``Authorization: Basic``
with the key as the user name (Segment's and RudderStack's SDKs send their write key so),
compared in constant time. The vendors' routes also take a key from the body (PostHog's and
Amplitude's SDKs send it there): ``key_ids`` lets the decoder look it up there.

Each key grants scopes (``API_KEYS=KEY:ingest+read``); each resource names the scope it
needs (``required_scope``). Mobile and web apps ship their ingest key inside the app, so a
key with only ``ingest`` must not read analytics: it gets 403 ``insufficient_scope``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import falcon.asgi

from core.codes import ErrorCode, Refusal
from core.config import SCOPES, ApiKey
from ingest.vendors.decode import key_digest
from service.cors import is_preflight

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
        if scheme.lower() == "basic" and value.strip():
            return _basic_user(value.strip())
    return None


def _basic_user(credentials: str) -> str | None:
    """The user name of Basic credentials (``base64(user:password)``), or None."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user = decoded.partition(":")[0].strip()
    return user or None


class AuthMiddleware:
    """Sets ``req.context.key_id`` or answers 401 (no or unknown key) or 403 (the key lacks
    the resource's ``required_scope``), for resources with ``auth_required``."""

    def __init__(self, keys: tuple[ApiKey, ...], *, allow_no_auth: bool = False) -> None:
        self._keys = [(k.secret.encode(), key_id(k.secret), k.scopes) for k in keys]
        self._open = not keys and allow_no_auth
        self._scopes = {kid: scopes for _, kid, scopes in self._keys}
        self._ids = {key_digest(k.secret): key_id(k.secret) for k in keys}

    # KeyBook (ingest/events.py): what the vendors' routes, which find their key
    # themselves, need.
    @property
    def key_ids(self) -> Mapping[bytes, str] | None:
        return None if self._open else self._ids

    def scopes(self, kid: str) -> frozenset[str]:
        return frozenset(SCOPES) if self._open else self._scopes.get(kid, frozenset())

    def from_headers(self, req: falcon.asgi.Request) -> tuple[str, frozenset[str]] | None:
        presented = presented_key(req)
        if self._open:
            return ANONYMOUS, frozenset(SCOPES)
        if presented is None:
            return None
        identified = self.identify(presented)
        if identified is None:
            raise _unauthorized()
        return identified

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
        if getattr(resource, "cors", False) and is_preflight(req):
            return  # a browser's CORS preflight carries no key (service/cors.py)
        identified = self.identify(presented_key(req))
        if identified is None:
            raise _unauthorized()
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


def _unauthorized() -> Refusal:
    return Refusal(
        ErrorCode.UNAUTHORIZED,
        "missing or invalid API key: send X-API-Key: <key> or Authorization: Bearer <key>",
        headers={"WWW-Authenticate": 'Bearer realm="events"'},
    )
