"""The real API process under hostile load: it keeps answering and its memory stays bounded.

``events serve`` with one gunicorn worker, so the probe and the large bodies share the event
loop at stake. The figures (latencies, peak RSS per attack) come from ``bench/adversity.py``
and are in docs/reliability.md; here only that the service keeps answering and stays within
its memory bound is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest

from bench.adversity import Tree, _valid_attack
from bench.attacks import ndjson_empty_objects
from core.config import Settings
from tests.conftest import API_KEY
from tests.services import free_port, start_api, wait_ready

pytestmark = pytest.mark.e2e
NDJSON = {"Content-Type": "application/x-ndjson"}


async def _probe(base: str, stop: asyncio.Event) -> list[int]:
    """/healthz every 20 ms until ``stop``; the status of each (0: no answer within 2 s)."""
    statuses = []
    async with httpx.AsyncClient(base_url=base, timeout=2) as http:
        while not stop.is_set():
            try:
                statuses.append((await http.get("/healthz")).status_code)
            except httpx.TimeoutException:
                statuses.append(0)
            await asyncio.sleep(0.02)
    return statuses


async def test_healthz_answers_and_memory_stays_bounded_under_maximal_bodies(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    api = start_api(settings, tmp_path / "api.log", port, workers=1)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base)
        tree = Tree(api.pid)
        hostile = [ndjson_empty_objects() for _ in range(3)]
        valid = [_valid_attack() for _ in range(3)]
        async with httpx.AsyncClient(
            base_url=base, timeout=120, headers={"X-API-Key": API_KEY}
        ) as http:
            await http.post("/events", content=valid[0].body, headers=NDJSON)  # warm up
            for bodies, expected in ((hostile, 413), (valid, 202)):
                peaks = tree.reset_peaks()
                stop = asyncio.Event()
                probe = asyncio.create_task(_probe(base, stop))
                answers = await asyncio.gather(
                    *(http.post("/events", content=a.body, headers=NDJSON) for a in bodies)
                )
                stop.set()
                statuses = await probe
                growth = tree.growth(peaks)
                assert [a.status_code for a in answers] == [expected] * 3
                # Still answering: every probe got its 200 (none waited 2 s), and there were
                # probes while the bodies were in flight.
                assert len(statuses) >= 3
                assert set(statuses) == {200}
                # Three bodies in flight at once: within the bound for each.
                assert growth["api"] < 3 * 256 * 2**20, growth
                assert growth["decoder"] < 256 * 2**20, growth
    finally:
        assert api.stop() == 0
    log = (tmp_path / "api.log").read_text()
    assert "Traceback" not in log


async def test_a_full_decode_budget_answers_503_with_retry_after(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    limits = {
        "EVENTS_MAX_BODY_BYTES": str(1 << 20),
        "EVENTS_DECODE_BUDGET_BYTES": str(1 << 20),
        "EVENTS_DECODE_WAIT_SECONDS": "0.5",
    }
    api = start_api(settings, tmp_path / "api.log", port, workers=1, **limits)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base)
        # A client announces a 1 MiB body and sends half of it: the whole budget is held.
        slow = socket.create_connection(("127.0.0.1", port))
        try:
            slow.sendall(
                b"POST /events HTTP/1.1\r\nHost: x\r\nX-API-Key: " + API_KEY.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n["
                + b" "
                * 500_000
            )
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(
                base_url=base, timeout=10, headers={"X-API-Key": API_KEY}
            ) as http:
                refused = await http.post("/events", content=b"[]", headers=NDJSON)
                health = await http.get("/healthz")
                slow.close()
                await asyncio.sleep(0.3)
                retried = await http.post(
                    "/events",
                    content=b'{"event_id":"8f0c6a2e-8d4b-4d0e-9a51-3b1f2c4d5e6f",'
                    b'"occurred_at":"2025-08-21T06:52:34Z","user_id":"u","event_type":"t"}',
                    headers=NDJSON,
                )
        finally:
            with contextlib.suppress(OSError):
                slow.close()
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "overloaded"
        assert refused.headers["retry-after"] == "1"
        assert health.status_code == 200  # the budget is for bodies only
        assert retried.status_code == 202  # room again once the slow body is gone
    finally:
        assert api.stop() == 0


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists()}


async def test_decoding_processes_end_with_their_api_process(
    settings: Settings, tmp_path: Path
) -> None:
    """Killed or stopped, an API process leaves no decoding process behind."""
    port = free_port()
    api = start_api(settings, tmp_path / "api.log", port, workers=1)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base)
        async with httpx.AsyncClient(
            base_url=base, timeout=60, headers={"X-API-Key": API_KEY}
        ) as http:
            answer = await http.post("/events", content=_valid_attack().body, headers=NDJSON)
            assert answer.status_code == 202
            worker = Tree(api.pid).processes()["api"].pid
            decoders = _descendants(worker)
            assert decoders, "the large body started decoding processes"
            os.kill(worker, signal.SIGKILL)  # no clean shutdown at all
            for _ in range(100):
                if not _alive(decoders):
                    break
                await asyncio.sleep(0.1)
            assert _alive(decoders) == set()
            # gunicorn starts a new worker; a graceful stop then leaves nothing either.
            await wait_ready(base)
            answer = await http.post("/events", content=_valid_attack().body, headers=NDJSON)
            assert answer.status_code == 202
            everything = _descendants(api.pid)
    finally:
        assert api.stop() == 0
    for _ in range(50):
        if not _alive(everything):
            break
        await asyncio.sleep(0.1)
    assert _alive(everything) == set()
