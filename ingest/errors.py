"""Errors answered to clients, all as ``{"error": {"code", "message", ...}}``."""

from __future__ import annotations

from typing import Any

import falcon


class ApiError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details

    def __reduce__(self) -> Any:
        # Decoding runs in other processes too: the error must survive pickling whole.
        state = (self.status, self.code, self.message, self.headers, self.details)
        return _rebuild, (type(self), state)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


def _rebuild(
    cls: type[ApiError], state: tuple[int, str, str, dict[str, str], dict[str, Any]]
) -> ApiError:
    status, code, message, headers, details = state
    error = ApiError.__new__(cls)
    ApiError.__init__(error, status, code, message, headers=headers, **details)
    return error


def bad_request(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(400, code, message, **details)


def too_large(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(413, code, message, **details)


def unsupported_media(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(415, code, message, **details)


def unavailable(code: str, message: str, *, retry_after: int = 1) -> ApiError:
    return ApiError(503, code, message, headers={"Retry-After": str(retry_after)})


# Falcon's own errors (404, 405, ...) keep their status but get our body shape.
_FALCON_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def falcon_error_body(error: falcon.HTTPError) -> dict[str, Any]:
    status = error.status_code
    code = _FALCON_CODES.get(status, "error")
    message = error.description or error.title or code
    return {"error": {"code": code, "message": message}}
