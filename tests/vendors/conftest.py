"""The real service (``events serve`` + ``events worker``) for the vendors' SDKs to talk to,
a fault-injecting proxy, and what was stored.

Keys: ``INGEST_KEY`` has only the ``ingest`` scope (what an app ships), ``READ_KEY`` only
``read``.
"""

from __future__ import annotations

import asyncio
import http.server
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from core.config import Settings
from tests.services import Process, free_port, start_api, start_worker, wait_ready

INGEST_KEY = "sdk-ingest-" + secrets.token_hex(8)
READ_KEY = "sdk-read-" + secrets.token_hex(8)
# UUIDv5 of a vendor's non-UUID id, as README documents it (computed here from the text,
# not by the service's code).
VENDOR_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:events:vendor")


def vendor_uuid(vendor: str, raw_id: str) -> str:
    return str(uuid.uuid5(uuid.uuid5(VENDOR_NAMESPACE, vendor), raw_id))


@dataclass
class Service:
    base: str
    api: Process
    worker: Process
    logs: list[Path]


@pytest.fixture
async def service(settings: Settings, tmp_path: Path) -> AsyncIterator[Service]:
    port = free_port()
    logs = [tmp_path / "api.log", tmp_path / "worker.log"]
    api = start_api(
        settings, logs[0], port, workers=1, API_KEYS=f"{INGEST_KEY}:ingest,{READ_KEY}:read"
    )
    worker = start_worker(settings, logs[1])
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base)
        yield Service(base, api, worker, logs)
    finally:
        assert api.stop() == 0
        assert worker.stop() == 0
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text, text[-4000:]
        # The keys the SDKs sent (in headers and bodies) are never logged.
        assert INGEST_KEY not in text and READ_KEY not in text


async def stored(
    db: asyncpg.Connection, expected: int, *, timeout: float = 30, settle: float = 1.0
) -> list[dict[str, Any]]:
    """The stored events once there are ``expected`` of them and no more arrive for
    ``settle`` seconds (so a duplicate arriving late is seen)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await db.fetchval("SELECT count(*) FROM events") >= expected:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(settle)
    rows = await db.fetch(
        "SELECT event_id::text, user_id, event_type, properties::text AS properties, "
        "occurred_at FROM events ORDER BY occurred_at, event_id"
    )
    return [{**dict(r), "properties": orjson.loads(r["properties"])} for r in rows]


@dataclass
class FaultProxy:
    """An HTTP proxy in front of the service: it forwards every request, and answers the
    first ``fail_first`` of them 503 *after* the service accepted them (the answer is lost,
    as when a load balancer times out): the SDK's retry must not store anything twice."""

    upstream: str
    fail_first: int = 1
    port: int = field(default_factory=free_port)
    answers: list[tuple[str, int, int]] = field(default_factory=list)  # path, ours, upstream

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self) -> Iterator[FaultProxy]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                upstream = httpx.post(
                    proxy.upstream + self.path, content=body, headers=headers, timeout=30
                )
                fail = len(proxy.answers) < proxy.fail_first
                status = 503 if fail else upstream.status_code
                data = b'{"code":"unavailable","message":"lost"}' if fail else upstream.content
                proxy.answers.append((self.path, status, upstream.status_code))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture
def proxy(service: Service) -> Iterator[FaultProxy]:
    yield from FaultProxy(service.base).serve()
