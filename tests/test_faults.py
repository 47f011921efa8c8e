"""Faults under load, with the service as real processes and the real servers.

Each test keeps a client load running (``tests.services.Load``: batches retried until
accepted, some sent twice) while a part fails, then checks the promise: every event that
got a 202 is stored, exactly once, and nothing else is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from core.config import Settings
from tests.conftest import API_KEY, new_event, queue_depth, wait_for_rows
from tests.services import Load, free_port, service_env, start_api, start_worker, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


async def wait_stored(db: asyncpg.Connection, expected: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        count = int(await db.fetchval("SELECT count(*) FROM events"))
        if count >= expected:
            # Settle: anything still to come would be a duplicate or a stray.
            await asyncio.sleep(1.0)
            return int(await db.fetchval("SELECT count(*) FROM events"))
        await asyncio.sleep(0.1)
    return count


async def assert_exactly_accepted(db: asyncpg.Connection, load: Load) -> None:
    stored = await wait_stored(db, len(load.accepted_ids))
    ids = {str(r["event_id"]) for r in await db.fetch("SELECT event_id FROM events")}
    assert stored == len(ids), "an event is stored twice"
    assert ids == load.accepted_ids, (
        f"lost: {len(load.accepted_ids - ids)}, not accepted but stored: "
        f"{len(ids - load.accepted_ids)}"
    )


def record(tmp_path: Path, name: str, load: Load, stored: int, **extra: object) -> None:
    """The figures for docs/reliability.md (printed; pytest -s shows them)."""
    figures = {
        "test": name,
        "batches_accepted": len(load.accepted_batches),
        "events_sent_with_repeats": load.accepted_events,
        "distinct_events_accepted": len(load.accepted_ids),
        "stored": stored,
        "lost": len(load.accepted_ids) - stored,
        "answers": {str(k): v for k, v in sorted(load.statuses.items(), key=str)},
        **extra,
    }
    print("RELIABILITY", json.dumps(figures))
    (tmp_path / "figures.json").write_text(json.dumps(figures))


@contextlib.asynccontextmanager
async def api(settings: Settings, tmp_path: Path, **env: str) -> AsyncIterator[str]:
    port = free_port()
    proc = start_api(settings, tmp_path / "api.log", port, **env)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base)
        yield base
    finally:
        code = proc.stop()
        log = (tmp_path / "api.log").read_text()
        assert code == 0, log[-3000:]
        # gunicorn exits 0 even when a worker crashed on the way out: look for it.
        assert "SIGSEGV" not in log and "Fatal Python error" not in log, log[-3000:]


async def test_worker_killed_mid_load_loses_and_doubles_nothing(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with api(settings, tmp_path) as base:
        worker = start_worker(settings, tmp_path / "worker.log")
        load = Load(base)
        load.start()
        try:
            await asyncio.sleep(2.0)
            # On a busy machine the worker process can take longer than that to start.
            before_kill = await wait_for_rows(db, 1)
            worker.kill()  # SIGKILL: no chance to finish its micro-batches
            await asyncio.sleep(1.0)
            worker.start()
            await asyncio.sleep(2.0)
        finally:
            await load.stop()
        try:
            await assert_exactly_accepted(db, load)
        finally:
            assert worker.stop() == 0
    stored = int(await db.fetchval("SELECT count(*) FROM events"))
    assert before_kill > 0  # the worker was really working when it died
    assert load.accepted_events > len(load.accepted_ids)  # repeats were sent
    record(tmp_path, "worker_kill_9", load, stored, stored_before_kill=before_kill)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture
def rabbitmq_restorer() -> Iterator[None]:
    """Whatever happens in the test, RabbitMQ runs again afterwards."""
    try:
        yield
    finally:
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")


async def test_rabbitmq_stopped_mid_load_answers_503_and_recovers(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path, rabbitmq_restorer: None
) -> None:
    async with api(settings, tmp_path) as base:
        worker = start_worker(settings, tmp_path / "worker.log")
        load = Load(base)
        load.start()
        try:
            await asyncio.sleep(1.5)
            accepted_before = len(load.accepted_batches)
            await asyncio.to_thread(_rabbitmqctl, "stop_app")
            await asyncio.sleep(2.0)
            refused_while_down = load.statuses[503]
            await asyncio.to_thread(_rabbitmqctl, "start_app")
            await asyncio.to_thread(_rabbitmqctl, "await_startup")
            up_at = len(load.accepted_batches)
            await asyncio.sleep(4.0)  # the API and the worker reconnect by themselves
        finally:
            await load.stop()
        accepted_after = len(load.accepted_batches) - up_at
        try:
            await assert_exactly_accepted(db, load)
        finally:
            assert worker.stop() == 0
    stored = int(await db.fetchval("SELECT count(*) FROM events"))
    assert accepted_before > 0
    assert refused_while_down > 0
    assert all(v.isdigit() and int(v) > 0 for v in load.retry_after_seen)
    assert accepted_after > 0  # recovered without a restart
    record(
        tmp_path,
        "rabbitmq_stop_app",
        load,
        stored,
        refused_503=load.statuses[503],
        accepted_after_restart=accepted_after,
    )


def _await_rabbitmq(timeout: float = 90) -> None:
    """Until the local node runs (just after ``rabbitmq-server -detached`` the CLI cannot
    reach it yet and ``await_startup`` fails at once)."""
    deadline = time.monotonic() + timeout
    while True:
        run = subprocess.run(
            ["rabbitmqctl", "await_startup", "--timeout", "30"],
            check=False,
            capture_output=True,
            timeout=60,
        )
        if run.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"RabbitMQ did not start: {run.stdout!r} {run.stderr!r}")
        time.sleep(0.5)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def rabbitmq_restarter() -> Iterator[None]:
    """Whatever happens in the test, the local RabbitMQ server runs again afterwards (started
    as ``.ci/run`` starts it)."""
    try:
        yield
    finally:
        if not _listening(5672):
            subprocess.run(["rabbitmq-server", "-detached"], check=True, timeout=60)
        _await_rabbitmq()


def _kill_rabbitmq_and_restart(down: float) -> float:
    """SIGKILL the local RabbitMQ server's Erlang VM, start it again ``down`` s later; the
    seconds from the kill until it accepts connections."""
    pid = int(
        subprocess.run(
            ["rabbitmqctl", "eval", "os:getpid()."], check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .strip('"')
    )
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    time.sleep(down)
    subprocess.run(["rabbitmq-server", "-detached"], check=True, timeout=60)
    _await_rabbitmq()
    return time.monotonic() - killed


async def test_rabbitmq_killed_9_loses_nothing_it_confirmed(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path, rabbitmq_restarter: None
) -> None:
    # The single local server, the default quorum queue: every 202 was confirmed by the
    # broker, so it must come back from the queue's log after a kill -9 (no stop_app).
    async with api(settings, tmp_path) as base:
        worker = start_worker(settings, tmp_path / "worker.log")
        load = Load(base)
        load.start()
        try:
            await asyncio.sleep(2.0)
            accepted_before = len(load.accepted_batches)
            outage = await asyncio.to_thread(_kill_rabbitmq_and_restart, 1.0)
            up_at = len(load.accepted_batches)
            await asyncio.sleep(5.0)  # the API and the worker reconnect by themselves
        finally:
            await load.stop(timeout=120)
        accepted_after = len(load.accepted_batches) - up_at
        try:
            await assert_exactly_accepted(db, load)
        finally:
            assert worker.stop() == 0
    stored = int(await db.fetchval("SELECT count(*) FROM events"))
    assert accepted_before > 0 and accepted_after > 0  # load before, recovered after
    assert load.statuses[503] > 0  # refused while down, retried by the client
    record(
        tmp_path,
        "rabbitmq_kill_9",
        load,
        stored,
        refused_503=load.statuses[503],
        broker_down_s=round(outage, 1),
        longest_gap_s=round(load.longest_gap(), 2),
        accepted_after_restart=accepted_after,
    )


async def test_graceful_shutdown_finishes_in_flight_requests(
    settings: Settings, tmp_path: Path
) -> None:
    """SIGTERM to the API while a request waits (?wait=true, no worker): it is answered."""
    port = free_port()
    proc = start_api(settings, tmp_path / "api.log", port)
    base = f"http://127.0.0.1:{port}"
    await wait_ready(base)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        pending = asyncio.create_task(
            http.post(
                "/events?wait=true&timeout=2",
                json=[new_event()],
                headers={"X-API-Key": API_KEY},
            )
        )
        await asyncio.sleep(0.5)
        stopping = asyncio.create_task(asyncio.to_thread(proc.stop))
        answer = await pending
        code = await stopping
    assert answer.status_code == 202
    assert answer.json()["committed"] is False
    assert code == 0
    assert await queue_depth(settings, settings.queue_name) == 1  # accepted means queued


async def test_worker_sigterm_finishes_its_batch_and_exits(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with api(settings, tmp_path) as base:
        worker = start_worker(settings, tmp_path / "worker.log")
        load = Load(base, senders=1)
        load.start()
        await asyncio.sleep(2.0)
        started = time.monotonic()
        code = await asyncio.to_thread(worker.stop, 30)
        took = time.monotonic() - started
        await load.stop()
        assert code == 0
        assert took < 30
        # What it did not finish is still queued: a new worker stores it all, once.
        worker.start()
        try:
            await assert_exactly_accepted(db, load)
        finally:
            assert worker.stop() == 0
    log = (tmp_path / "worker.log").read_text()
    assert "worker stopped" in log


def _raw_request(port: int, data: bytes, *, wait: float = 5.0) -> tuple[bytes, float]:
    """Send raw bytes, read until the server closes; the reply and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait + 5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - started


async def test_header_abuse_and_slow_clients_on_the_real_server(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    proc = start_api(
        settings,
        tmp_path / "api.log",
        port,
        EVENTS_CLIENT_TIMEOUT="1",
        EVENTS_MAX_HEADER_BYTES="4096",
    )
    try:
        await wait_ready(f"http://127.0.0.1:{port}")
        huge_header = b"POST /events HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 10_000 + b"\r\n\r\n"
        many_headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 1000 + b"\r\n"
        long_url = b"GET /healthz?" + b"q" * 8000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        slow_headers = b"POST /events HTTP/1.1\r\nHost: x\r\n"  # never finished
        slow_body = (
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-API-Key: " + API_KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n[{"
        )
        results = await asyncio.gather(
            *(
                asyncio.to_thread(_raw_request, port, data)
                for data in (huge_header, many_headers, long_url, slow_headers, slow_body)
            )
        )
        ok = await asyncio.to_thread(
            _raw_request, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    finally:
        assert proc.stop() == 0
    for reply, _ in results[:3]:
        assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
        assert b'"code":"headers_too_large"' in reply
    slow_reply, slow_took = results[3]
    assert slow_reply.startswith(b"HTTP/1.1 408"), slow_reply[:200]
    assert 0.9 <= slow_took < 4
    body_reply, body_took = results[4]
    assert body_reply.startswith(b"HTTP/1.1 408"), body_reply[:200]
    assert b'"code":"request_timeout"' in body_reply
    assert 0.9 <= body_took < 4
    assert ok[0].startswith(b"HTTP/1.1 200")


def _trickle_after_answer(port: int) -> tuple[bytes, float]:
    """Unauthenticated POST with a large Content-Length: read the 401, then keep sending a
    byte every 0.2 s. Returns the answer and the seconds until the server closed."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n["
        )
        answer = sock.recv(65536)
        sock.settimeout(0.2)
        while time.monotonic() - started < 20:
            try:
                sock.sendall(b" ")
                if sock.recv(65536) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
    return answer, time.monotonic() - started


async def test_slow_answers_are_not_cut_off_but_slow_bodies_are(
    settings: Settings, tmp_path: Path
) -> None:
    """The client timeout bounds what the client sends, never how long the app works."""
    port = free_port()
    proc = start_api(settings, tmp_path / "api.log", port, EVENTS_CLIENT_TIMEOUT="1")
    try:
        await wait_ready(f"http://127.0.0.1:{port}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            started = time.monotonic()
            # No worker runs: the request waits its whole timeout, beyond the client timeout.
            slow = await http.post(
                "/events?wait=true&timeout=2.5",
                json=[new_event()],
                headers={"X-API-Key": API_KEY},
            )
            took = time.monotonic() - started
            # The same keep-alive connection still works afterwards.
            again = await http.get("/healthz")
        answer, closed_after = await asyncio.to_thread(_trickle_after_answer, port)
    finally:
        assert proc.stop() == 0
    assert slow.status_code == 202, slow.text
    assert slow.json()["committed"] is False
    assert took >= 2.4
    assert again.status_code == 200
    assert answer.startswith(b"HTTP/1.1 401")
    assert closed_after < 5  # 1 s + 1 s of grace, not the 20 s the client would go on


async def test_metrics_are_summed_over_gunicorn_workers_and_the_worker(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """`events up`: one metrics directory; /metrics on any API process reports all."""
    from tests.ingest.test_protection import sample

    port = free_port()
    env = service_env(settings)
    argv = [
        sys.executable,
        "-m",
        "service.cli",
        "up",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
    ]
    with (tmp_path / "up.log").open("w") as out:
        up = subprocess.Popen(argv, env=env, stdout=out, stderr=out)  # noqa: ASYNC220
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base)
        headers = {"X-API-Key": API_KEY}
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as http:
            # Several connections, so that both gunicorn workers take some of them.
            clients = [
                httpx.AsyncClient(base_url=base, timeout=30, headers=headers) for _ in range(6)
            ]
            try:
                answers = await asyncio.gather(
                    *(
                        c.post("/events?wait=true", json=[new_event() for _ in range(10)])
                        for c in clients
                        for _ in range(3)
                    )
                )
            finally:
                for c in clients:
                    await c.aclose()
            assert {a.status_code for a in answers} == {200}
            text = (await http.get("/metrics")).text
            again = (await http.get("/metrics")).text
            # Analytics in a forked gunicorn worker (DuckDB is opened after the fork).
            dau = await http.get("/stats/dau?from=2025-08-20&to=2025-08-21")
    finally:
        up.send_signal(2)
        code = await asyncio.to_thread(up.wait, 60)
    log = (tmp_path / "up.log").read_text()
    assert code == 0, log[-3000:]
    assert "SIGSEGV" not in log and "Fatal Python error" not in log, log[-3000:]
    assert dau.status_code == 200
    assert dau.json()["dau"] == [
        {"date": "2025-08-20", "unique_users": 0},
        {"date": "2025-08-21", "unique_users": 1},
    ]
    for body in (text, again):  # whichever process answered, the totals are the same
        assert sample(body, "events_accepted_total") == 180
        assert sample(body, "events_inserted_total") == 180
        assert (
            sample(
                body,
                "http_request_duration_seconds_count",
                route="/events",
                method="POST",
                status="200",
            )
            == 18
        )
    assert int(await db.fetchval("SELECT count(*) FROM events")) == 180
