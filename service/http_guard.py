"""uvicorn's httptools protocol with two guards it lacks: header size and header time.

- ``EVENTS_MAX_HEADER_BYTES``: the request line plus headers may be at most this large;
  beyond it the client gets a 431 and the connection is closed, before the app sees it.
- ``EVENTS_CLIENT_TIMEOUT``: a connection must deliver a request's headers within this
  many seconds of opening (or of the previous response), and the request's body within
  this many seconds (plus one) of its headers; otherwise 408 (or, once an answer was sent,
  a plain close). ``POST /events`` bounds its body the same way inside the app
  (``ingest.body.read_body``) with a structured 408; the protocol's body timer is the
  backstop for every route, including those that answer before reading the body (401,
  404, ...). Together they stop a slow client (slowloris) from holding a connection slot
  forever. The time the app takes to answer is never bounded here.
"""

from __future__ import annotations

import asyncio
import http
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.codes import ErrorCode
from core.config import Settings


class _HeadersTooLarge(Exception):
    pass


def _error_response(code: ErrorCode, message: str) -> bytes:
    body = orjson.dumps({"error": {"code": code.value, "message": message}})
    reason = http.HTTPStatus(code.status).phrase
    return b"".join(
        [
            b"HTTP/1.1 ",
            f"{code.status} {reason}".encode(),
            b"\r\ncontent-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        ]
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 16384
    header_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._in_message = False  # between a request's first byte and its last

    # Timer: armed while waiting for a request's headers.
    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        self._body_timer = self.loop.call_later(self.header_timeout + 1, self._body_timed_out)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self._refuse(
                ErrorCode.REQUEST_TIMEOUT,
                f"the request body was not received within {self.header_timeout:g} s",
            )
            return
        # An answer is already on its way (the app did not need the body): no more
        # requests on this connection, and close it once the answer is out.
        cycle.keep_alive = False
        if cycle.response_complete and not self.transport.is_closing():
            self.transport.close()

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        self._refuse(
            ErrorCode.REQUEST_TIMEOUT,
            f"the request headers were not received within {self.header_timeout:g} s",
        )

    def _refuse(self, code: ErrorCode, message: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(_error_response(code, message))
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as ex:
            if isinstance(ex.__context__, _HeadersTooLarge):
                self._cancel_header_timer()
                self._refuse(
                    ErrorCode.HEADERS_TOO_LARGE,
                    f"the request line and headers exceed {self.max_header_bytes} bytes",
                )
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    # Parser callbacks
    def on_message_begin(self) -> None:
        self._header_bytes = 0
        self._in_message = True
        super().on_message_begin()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            raise _HeadersTooLarge

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()
        if not self.transport.is_closing():
            self._arm_body_timer()

    def on_message_complete(self) -> None:
        self._in_message = False
        self._cancel_body_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle again (nothing pipelined, the request fully read): the next request's
        # headers are due within the timeout. While the app works, nothing is armed.
        if not self.transport.is_closing() and not self.pipeline and not self._in_message:
            self._arm_header_timer()


def guarded_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with this deployment's limits."""
    return type(
        "EventsHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "header_timeout": settings.client_timeout,
        },
    )
