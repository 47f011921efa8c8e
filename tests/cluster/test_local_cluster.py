"""deploy/local/cluster: three real RabbitMQ nodes in one cluster, a PostgreSQL primary and its
synchronous standby, all on this machine. The module brings the cluster up, checks what the
service will rely on, then takes it down (and brings it back if it was up before the tests).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "deploy" / "local" / "cluster"
STATE = Path(os.environ.get("EVENTS_CLUSTER_DIR") or "/tmp/events-cluster")  # noqa: S108
NODES = ["rabbit-a@localhost", "rabbit-b@localhost", "rabbit-c@localhost"]
PORTS = [5681, 5682, 5683, 25681, 25682, 25683, 5441, 5442]
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(600),
    pytest.mark.skipif(os.geteuid() != 0, reason="deploy/local/cluster runs as root"),
    pytest.mark.skipif(
        not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()
        or not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")),
        reason="needs the Debian rabbitmq-server and postgresql packages",
    ),
]


def cluster(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLUSTER), command], capture_output=True, text=True, timeout=300, check=False
    )


def parse(stdout: str) -> dict[str, str]:
    lines = [line for line in stdout.splitlines() if line]
    pairs = dict(line.split("=", 1) for line in lines)
    assert len(pairs) == len(lines)
    return pairs


def ctl(*args: str, node: str = NODES[0]) -> str:
    cp = subprocess.run(
        [RABBITMQCTL, "-n", node, *args], capture_output=True, text=True, timeout=60, check=True
    )
    return cp.stdout


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def was_up() -> bool:
    return cluster("status").returncode == 0


@pytest.fixture(scope="module")
def env(was_up: bool) -> Iterator[dict[str, str]]:
    started = time.monotonic()
    cp = cluster("up")
    assert cp.returncode == 0, cp.stderr
    print(f"deploy/local/cluster up: {time.monotonic() - started:.1f}s")
    yield parse(cp.stdout)
    if was_up:
        assert cluster("up").returncode == 0  # as we found it
    else:
        cluster("down")


def test_up_prints_exactly_the_settings(env: dict[str, str]) -> None:
    assert env["RABBITMQ_URL"] == ",".join(
        f"amqp://guest:guest@127.0.0.1:{p}/%2F" for p in (5681, 5682, 5683)
    )
    assert env["RABBITMQ_NODES"] == ",".join(NODES)
    assert env["DATABASE_URL"] == (
        "postgresql://postgres@127.0.0.1:5441,127.0.0.1:5442/postgres"
        "?target_session_attrs=read-write"
    )
    assert env["ANALYTICS_DATABASE_URL"] == "postgresql://postgres@127.0.0.1:5442/postgres"
    assert Path(env["PG_BIN"], "pg_ctl").is_file()
    for key in ("PG_PRIMARY_DATA", "PG_STANDBY_DATA"):
        assert Path(env[key]).is_relative_to(STATE)
    assert list(env) == [
        "RABBITMQ_URL",
        "RABBITMQ_NODES",
        "DATABASE_URL",
        "ANALYTICS_DATABASE_URL",
        "PG_PRIMARY_DATA",
        "PG_STANDBY_DATA",
        "PG_BIN",
    ]


def test_up_again_verifies_and_prints_the_same(env: dict[str, str]) -> None:
    cp = cluster("up")
    assert cp.returncode == 0, cp.stderr
    assert parse(cp.stdout) == env
    assert "already up" in cp.stderr
    assert cluster("status").returncode == 0


def test_three_nodes_in_one_cluster(env: dict[str, str]) -> None:
    for node in NODES:
        status = json.loads(ctl("cluster_status", "--formatter", "json", node=node))
        assert sorted(status["running_nodes"]) == NODES
        assert sorted(status["disk_nodes"]) == NODES
        assert not status["alarms"]
    # Not the default node: its own listener, its own cluster.
    assert "rabbit@localhost" not in ctl("cluster_status")


async def test_quorum_queue_spans_the_nodes_and_messages_cross_them(env: dict[str, str]) -> None:
    urls = env["RABBITMQ_URL"].split(",")
    queue = f"cluster_test_{secrets.token_hex(4)}"
    first = await aio_pika.connect(urls[0])
    try:
        channel = await first.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        members: list[str] = []
        for _ in range(50):
            rows = json.loads(ctl("list_queues", "name", "type", "members", "--formatter", "json"))
            row = next(r for r in rows if r["name"] == queue)
            assert row["type"] == "quorum"
            members = sorted(row["members"])
            if members == NODES:
                break
            await asyncio.sleep(0.2)
        assert members == NODES
        body = secrets.token_bytes(16)
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)

        third = await aio_pika.connect(urls[2])
        try:
            ch3 = await third.channel()
            q3 = await ch3.get_queue(queue)
            message = None
            for _ in range(50):
                message = await q3.get(fail=False)
                if message is not None:
                    break
                await asyncio.sleep(0.1)
            assert message is not None and message.body == body
            await message.ack()
        finally:
            await third.close()
        await channel.queue_delete(queue)
    finally:
        await first.close()


async def test_a_commit_on_the_primary_reaches_the_sync_standby(env: dict[str, str]) -> None:
    primary = await asyncpg.connect("postgresql://postgres@127.0.0.1:5441/postgres")
    standby = await asyncpg.connect(env["ANALYTICS_DATABASE_URL"])
    table = f"cluster_test_{secrets.token_hex(4)}"
    try:
        assert await primary.fetchval("SELECT pg_is_in_recovery()") is False
        assert await standby.fetchval("SELECT pg_is_in_recovery()") is True
        repl = await primary.fetch(
            "SELECT application_name, state, sync_state FROM pg_stat_replication"
        )
        assert [tuple(r) for r in repl] == [("standby", "streaming", "sync")]
        assert await primary.fetchval("SHOW synchronous_commit") == "on"

        await primary.execute(f"CREATE TABLE {table} (v text)")
        value = secrets.token_hex(8)
        await primary.execute(f"INSERT INTO {table} VALUES ($1)", value)
        # synchronous_commit=on waits for the standby to flush the WAL; replay follows at once.
        seen = None
        for _ in range(100):
            exists = await standby.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
            if exists:
                seen = await standby.fetchval(f"SELECT v FROM {table}")
                if seen == value:
                    break
            await asyncio.sleep(0.05)
        assert seen == value

        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await standby.execute(f"INSERT INTO {table} VALUES ('no')")
    finally:
        await primary.execute(f"DROP TABLE IF EXISTS {table}")
        await primary.close()
        await standby.close()


async def test_the_multi_host_url_finds_the_primary(env: dict[str, str]) -> None:
    urls = [
        env["DATABASE_URL"],
        # The standby listed first: target_session_attrs still picks the primary.
        "postgresql://postgres@127.0.0.1:5442,127.0.0.1:5441/postgres"
        "?target_session_attrs=read-write",
    ]
    for url in urls:
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
            assert await conn.fetchval("SELECT inet_server_port()") == 5441
        finally:
            await conn.close()


def test_down_stops_everything_and_frees_the_ports(env: dict[str, str]) -> None:
    started = time.monotonic()
    cp = cluster("down")
    assert cp.returncode == 0, cp.stderr
    print(f"deploy/local/cluster down: {time.monotonic() - started:.1f}s")
    assert [p for p in PORTS if listening(p)] == []
    assert not STATE.exists()
    assert cluster("status").returncode != 0
    assert cluster("down").returncode == 0  # idempotent
    # The default servers are untouched.
    assert listening(5432)
    assert listening(5672)
