"""The service as real processes for the dashboard's tests (and its screenshot), with its own
database, queues and lake, and a headless Chromium (Debian's, driven by Playwright).

The keys: ``tests.conftest.API_KEY`` (every scope) sends the events; the dashboard gets
``READ_KEY`` (``read`` only), as a dashboard should; ``INGEST_KEY`` has no ``read``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
from playwright.sync_api import Browser, sync_playwright

from core.config import Settings
from pipeline.topology import Topology, delete_queues
from storage.db import drop_database
from storage.migrate import migrate
from tests.conftest import API_KEY, RUN_ID, _database_url, make_settings
from tests.services import Process, free_port, start_api, start_worker

CHROMIUM = Path("/usr/bin/chromium")
READ_KEY = "dash-read-" + secrets.token_hex(8)
INGEST_KEY = "dash-ingest-" + secrets.token_hex(8)


@dataclass
class Service:
    base: str
    settings: Settings
    logs: list[Path]

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def send(self, events: list[dict[str, Any]]) -> None:
        """Stored before this returns (``?wait=true``)."""
        answer = httpx.post(
            f"{self.base}/events?wait=true&timeout=60",
            content=orjson.dumps(events),
            headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
            timeout=90,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["inserted"] == len(events), answer.text

    def stats(self, path: str, params: list[tuple[str, str]], key: str = READ_KEY) -> Any:
        answer = httpx.get(
            f"{self.base}{path}", params=params, headers={"X-API-Key": key}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        return answer.json()


def _wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{base} not ready after {timeout} s")


@contextlib.contextmanager
def running_service(workdir: Path, name: str = "dash") -> Iterator[Service]:
    """``events serve`` (2 workers) and ``events worker`` on a database of their own; every
    day hot (PostgreSQL), so that any fixed date range is answered without a compaction."""
    url = _database_url(f"events_{name}_{RUN_ID}")
    settings = make_settings(database_url=url)
    asyncio.run(migrate(url))
    env = {
        "API_KEYS": f"{READ_KEY}:read,{INGEST_KEY}:ingest",
        "EVENTS_HOT_DAYS": "10000",
        "EVENTS_LAKE_DIR": str(workdir / "lake"),
    }
    port = free_port()
    logs = [workdir / "api.log", workdir / "worker.log"]
    processes: list[Process] = []
    try:
        processes.append(start_api(settings, logs[0], port, **env))
        processes.append(start_worker(settings, logs[1], **env))
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base)
        yield Service(base, settings, logs)
    finally:
        for process in processes:
            process.stop()
        asyncio.run(drop_database(url))
        with contextlib.suppress(Exception):
            asyncio.run(_delete_queues(settings))


async def _delete_queues(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        await delete_queues(connection, Topology.from_settings(settings))
    finally:
        await connection.close()


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium (``tools/system-packages`` installs it; ``make test`` runs that)."""
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: the dashboard is tested in Debian's chromium; install it with "
        "tools/system-packages (make test runs it) or `apt-get install chromium`"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
