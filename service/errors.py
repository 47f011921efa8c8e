"""Falcon's own errors (404, 405, malformed requests) in the service's error shape.

Every other refusal is a ``core.codes.Refusal`` naming an ``ErrorCode``.
"""

from __future__ import annotations

from typing import Any

import falcon

from core.codes import ErrorCode

# Falcon's own errors (404, 405, ...) keep their status but get our body shape.
_FALCON_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    408: ErrorCode.REQUEST_TIMEOUT,
    411: ErrorCode.LENGTH_REQUIRED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorCode.TOO_MANY_REQUESTS,
}


def falcon_error_body(error: falcon.HTTPError) -> dict[str, Any]:
    status = error.status_code
    code = _FALCON_CODES.get(status, ErrorCode.ERROR)
    message = error.description or error.title or code.value
    return {"error": {"code": code.value, "message": message}}
