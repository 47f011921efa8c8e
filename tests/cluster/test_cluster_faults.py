"""Faults on the distributed engines (issue 14), on the local cluster of
``deploy/local/cluster`` (three RabbitMQ nodes, a PostgreSQL primary with a synchronous
standby), under load from two clients that retry refused batches and record every 202
(``tests.services.Load``): a killed queue leader, a killed primary with its standby promoted,
the single default RabbitMQ server killed -9. Each checks the promise: every event that got a
202 stored exactly once, nothing else, with no restart of the API or the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from core.config import Settings
from storage.migrate import migrate
from tests.cluster.conftest import cluster_settings
from tests.conftest import API_KEY, new_event
from tests.services import (
    EVENTS,
    Load,
    Process,
    free_port,
    service_env,
    start_api,
    start_worker,
    wait_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant at once (a machine that dies)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


async def wait_stored(url: str, expected: int, timeout: float = 120) -> list[str]:
    """The stored event ids once there are ``expected`` and nothing more comes for a second."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        try:
            while time.monotonic() < deadline:
                if await conn.fetchval("SELECT count(*) FROM events") >= expected:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            return [str(r[0]) for r in await conn.fetch("SELECT event_id FROM events")]
        finally:
            await conn.close()


class Running:
    """The API (two gunicorn workers) and two worker processes on the cluster."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logs = [tmp_path / "api.log", tmp_path / "worker.log"]
        self.api = start_api(settings, self.logs[0], self.port, workers=2)
        self.workers: list[Process] = [
            start_worker(settings, tmp_path / f"worker-{i}.log") for i in range(2)
        ]
        self.pids = [self.api.pid, *(w.pid for w in self.workers)]

    def alive_unrestarted(self) -> bool:
        return [self.api.pid, *(w.pid for w in self.workers)] == self.pids and all(
            p.proc is not None and p.proc.poll() is None for p in (self.api, *self.workers)
        )

    def stop(self) -> list[int]:
        return [self.api.stop(), *(w.stop() for w in self.workers)]


def figures(name: str, load: Load, stored: list[str], **extra: Any) -> dict[str, Any]:
    found = {
        "test": name,
        "batches_accepted": len(load.accepted_batches),
        "events_sent_with_repeats": load.accepted_events,
        "distinct_events_accepted": len(load.accepted_ids),
        "stored": len(stored),
        "lost": len(load.accepted_ids - set(stored)),
        "doubled": len(stored) - len(set(stored)),
        "stored_not_accepted": len(set(stored) - load.accepted_ids),
        "answers": {str(k): v for k, v in sorted(load.statuses.items(), key=str)},
        "refusals": dict(load.refusals),
        "longest_gap_s": round(load.longest_gap(), 2),
        **extra,
    }
    print("RELIABILITY", json.dumps(found))
    return found


def rabbitmqctl(node: str, *args: str) -> str:
    run = subprocess.run(
        ["rabbitmqctl", "-n", node, *args], capture_output=True, text=True, check=False, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def leader_of(queue: str, node: str) -> str:
    rows = json.loads(rabbitmqctl(node, "list_queues", "name", "leader", "--formatter", "json"))
    (leader,) = [r["leader"] for r in rows if r["name"] == queue]
    return str(leader)


def beam_pid(node: str) -> int:
    return int(rabbitmqctl(node, "eval", "os:getpid().").strip().strip('"'))


async def _under_load(run: Running, fault: Any, *, before: float = 3.0, after: float = 8.0) -> Load:
    load = Load(run.base, batch_size=200, senders=2)
    load.start()
    await asyncio.sleep(before)
    await asyncio.to_thread(fault)
    await asyncio.sleep(after)
    try:
        await load.stop(timeout=120)
    except TimeoutError:
        raise AssertionError(f"batches still refused: {dict(load.refusals)}") from None
    return load


async def test_killing_the_queue_leader_loses_and_doubles_nothing(
    up: dict[str, str], tmp_path: Path
) -> None:
    settings = cluster_settings(up, "leader")
    await migrate(settings.database_url)
    nodes = up["RABBITMQ_NODES"].split(",")
    run = Running(settings, tmp_path)
    try:
        await wait_ready(run.base, timeout=60)
        killed: dict[str, Any] = {}

        def kill_leader() -> None:
            leader = leader_of(settings.queue_name, nodes[0])
            killed["node"] = leader
            os.kill(beam_pid(leader), signal.SIGKILL)

        load = await _under_load(run, kill_leader)
        stored = await wait_stored(settings.database_url, len(load.accepted_ids))
        assert run.alive_unrestarted(), "the API or a worker was restarted"
        alive = [n for n in nodes if n != killed["node"]]
        new_leader = leader_of(settings.queue_name, alive[0])
    finally:
        codes = run.stop()
    found = figures(
        "queue leader killed -9", load, stored, killed=killed["node"], new_leader=new_leader
    )
    assert found["lost"] == found["doubled"] == found["stored_not_accepted"] == 0, found
    assert new_leader != killed["node"] and new_leader in alive
    assert len(load.accepted_batches) > 20, found  # the load went on
    assert codes == [0, 0, 0]


async def test_killing_the_primary_and_promoting_the_standby_loses_and_doubles_nothing(
    up: dict[str, str], tmp_path: Path
) -> None:
    settings = cluster_settings(up, "failover")
    await migrate(settings.database_url)
    primary = Path(up["PG_PRIMARY_DATA"])
    run = Running(settings, tmp_path)
    try:
        await wait_ready(run.base, timeout=60)

        def fail_over() -> None:
            postmaster = int((primary / "postmaster.pid").read_text().split()[0])
            kill_tree(postmaster)
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    f"{up['PG_BIN']}/pg_ctl",
                    "promote",
                    "-D",
                    up["PG_STANDBY_DATA"],
                    "-w",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )

        load = await _under_load(run, fail_over, after=10.0)
        stored = await wait_stored(settings.database_url, len(load.accepted_ids))
        assert run.alive_unrestarted(), "the API or a worker was restarted"
        # The API's LISTEN and lookups follow the primary too: ?wait=true sees the commit.
        async with httpx.AsyncClient(
            base_url=run.base, headers={"X-API-Key": API_KEY}, timeout=60
        ) as http:
            waited = await http.post(
                "/events?wait=true&timeout=30", content=orjson.dumps([new_event()])
            )
        # So does the compactor: a run on the new primary.
        compact = await asyncio.to_thread(
            subprocess.run,
            [*EVENTS, "compact"],
            env=service_env(settings, EVENTS_LAKE_DIR=str(tmp_path / "lake")),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        conn = await asyncpg.connect(settings.database_url)
        try:
            port = await conn.fetchval("SELECT current_setting('port')")
            in_recovery = await conn.fetchval("SELECT pg_is_in_recovery()")
        finally:
            await conn.close()
    finally:
        codes = run.stop()
    found = figures("primary killed -9, standby promoted", load, stored, new_primary_port=port)
    assert found["lost"] == found["doubled"] == found["stored_not_accepted"] == 0, found
    assert port == "5442" and in_recovery is False
    assert waited.status_code == 200 and waited.json()["committed"] is True, waited.text
    assert compact.returncode == 0, compact.stdout + compact.stderr
    assert len(load.accepted_batches) > 20, found
    assert codes == [0, 0, 0]
