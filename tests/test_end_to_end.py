"""HTTP -> queue -> worker -> PostgreSQL with the shared sample, in every body format."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from falcon import testing

from core.config import Settings
from tests import sample
from tests.conftest import API_KEY, running_worker, wait_for_rows
from tests.services import free_port, service_env

FORMATS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "json": ("application/json", sample.json_body),
    "ndjson": ("application/x-ndjson", sample.ndjson_body),
    "arrow": ("application/vnd.apache.arrow.stream", sample.arrow_body),
}


async def assert_sample_stored(db: asyncpg.Connection, *, hot: bool = False) -> None:
    expected = sample.expected_rows()
    rows = await db.fetch(
        "SELECT event_id, occurred_at, user_id, event_type, properties FROM events"
    )
    assert len(rows) == 5000
    for r in rows:
        occurred_at, user_id, event_type, properties = expected[r["event_id"]]
        assert r["occurred_at"] == occurred_at
        assert r["user_id"] == user_id
        assert r["event_type"] == event_type
        assert json.loads(r["properties"]) == properties
    if hot:
        # Each row sits in the partition of its UTC day.
        misplaced = await db.fetchval(
            "SELECT count(*) FROM events WHERE tableoid::regclass::text <> "
            "'events_p' || to_char(occurred_at AT TIME ZONE 'UTC', 'YYYYMMDD')"
        )
        assert misplaced == 0


@pytest.mark.parametrize("fmt", sorted(FORMATS))
async def test_sample_through_the_whole_path_exactly_once(
    fmt: str, client: testing.ASGIConductor, settings: Settings, db: asyncpg.Connection
) -> None:
    content_type, make_body = FORMATS[fmt]
    payload = make_body()
    # A hot window long enough to reach back to the sample's month (August 2025).
    async with running_worker(settings.with_overrides(hot_days=10_000)):
        first = await client.simulate_post(
            "/events", body=payload, headers={"Content-Type": content_type}
        )
        assert first.status_code == 202
        assert (first.json["received"], first.json["accepted"]) == (5000, 5000)
        assert await wait_for_rows(db, 5000) == 5000
        again = await client.simulate_post(
            "/events?wait=true", body=payload, headers={"Content-Type": content_type}
        )
        assert again.status_code == 200
        assert (again.json["inserted"], again.json["duplicates"]) == (0, 5000)
    await assert_sample_stored(db, hot=True)


@pytest.mark.e2e
async def test_real_processes_serve_and_worker(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """`events serve` (gunicorn, 2 workers) and `events worker` as real processes."""
    port = free_port()
    env = service_env(settings)
    events = [sys.executable, "-m", "service.cli"]
    # The service runs as real child processes for the whole test: Popen is the point here.
    api = subprocess.Popen(  # noqa: ASYNC220
        [*events, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        env=env,
        stderr=(tmp_path / "api.log").open("w"),
    )
    worker = subprocess.Popen(  # noqa: ASYNC220
        [*events, "worker"], env=env, stderr=(tmp_path / "worker.log").open("w")
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for _ in range(200):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            ndjson = gzip.compress(sample.ndjson_body())
            answer = await http.post(
                "/events?wait=true&timeout=30",
                content=ndjson,
                headers={
                    "Content-Type": "application/x-ndjson",
                    "Content-Encoding": "gzip",
                    "Authorization": f"Bearer {API_KEY}",
                },
            )
            assert answer.status_code == 200, answer.text
            assert (answer.json()["inserted"], answer.json()["duplicates"]) == (5000, 0)
            denied = await http.post("/events", content=b"[]")
            assert denied.status_code == 401
        await assert_sample_stored(db, hot=False)
    finally:
        for proc in (api, worker):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=30) for proc in (api, worker)]
        logs = (tmp_path / "api.log").read_text() + (tmp_path / "worker.log").read_text()
    assert codes == [0, 0], logs
    assert API_KEY not in logs  # secrets never reach the logs
    request_lines = [
        json.loads(line)
        for line in logs.splitlines()
        if line.startswith("{") and '"msg":"request"' in line
    ]
    assert any(
        r["path"] == "/events" and r["status"] == 200 and r["events"] == 5000 for r in request_lines
    )
