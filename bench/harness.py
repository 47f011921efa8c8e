"""``events bench``: load a running (or self-started) service and report what it sustains.

    events bench --start                         # scratch database, API + worker, 100k events
    events bench --start --events 1000000 --format arrow --json

Method: N events are generated (seeded: 6 event types, 10,000 users, 30 days, small
properties) and serialised into batches before the clock starts. C connections send them as
fast as the service answers. Reported:

- accept rate: events / seconds from the first request to the last 202;
- end-to-end rate: events / seconds from the first request until ``ingest_batches`` holds
  every event (i.e. committed in PostgreSQL);
- request latency p50 / p95 / p99;
- the ceiling, measured in the same run on the same rows, as the issue defines it: a plain
  asyncpg COPY (binary, one connection, one transaction) of the rows into an empty table
  shaped like ``events`` with the same key and the same duplicate check, i.e. PostgreSQL's
  dedupe COPY: COPY into a staging table, then ``INSERT ... ON CONFLICT (event_id) DO
  NOTHING`` into a table keyed by ``event_id``; and the ratio end-to-end / ceiling. For
  context the raw COPY (straight into the keyed table, no dedupe: it would fail on a repeated
  id) is reported too, with its ratio;
- peak RSS and CPU seconds per 1,000 events of the API and worker processes (with
  ``--start``, or ``--api-pid`` / ``--worker-pid``);
- the latency of a DAU query over the loaded range.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
import psutil
import pyarrow as pa
from tqdm import tqdm

from bench import data
from pipeline.message import EVENT_SCHEMA
from storage.copy import encode_binary
from storage.db import drop_database

EVENT_TYPES = ["app_open", "view_item", "add_to_cart", "purchase", "login", "logout"]
COUNTRIES = ["UA", "PL", "DE", "SE", "NL", "RO", "KZ", "US"]
CONTENT_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "arrow": "application/vnd.apache.arrow.stream",
}


def generate(n: int, *, users: int, days: int, seed: int) -> pa.Table:
    """The harness's workload: uniform over the last ``days`` days (``bench/data.py``)."""
    return data.events(n, users=users, days=days, end=datetime.now(UTC), seed=seed)


def serialise(table: pa.Table, fmt: str, batch: int, gzip_level: int | None) -> list[bytes]:
    import gzip  # noqa: PLC0415

    bodies = []
    for offset in range(0, table.num_rows, batch):
        part = table.slice(offset, batch)
        if fmt == "arrow":
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, part.schema) as writer:
                writer.write_table(part)
            body = bytes(sink.getvalue())
        else:
            rows = part.to_pylist()
            events = [
                {
                    "event_id": str(uuid.UUID(bytes=r["event_id"])),
                    "occurred_at": r["occurred_at"].isoformat(),
                    "user_id": int(r["user_id"]),
                    "event_type": r["event_type"],
                    "properties": orjson.loads(r["properties"]),
                }
                for r in rows
            ]
            body = (
                orjson.dumps(events)
                if fmt == "json"
                else b"\n".join(orjson.dumps(e) for e in events)
            )
        bodies.append(gzip.compress(body, gzip_level) if gzip_level is not None else body)
    return bodies


# Servers on this host whose CPU time is reported too. Found by the ports of DATABASE_URL
# (every host of a multi-host URL) and RABBITMQ_URL (every comma-separated URL): the process
# listening there and its descendants; by process name only if no port is served locally.
SERVERS = {"postgres": ("postgres",), "rabbitmq": ("beam.smp",)}
DEFAULT_PORTS = {"postgres": 5432, "rabbitmq": 5672}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


def server_ports(database_url: str, rabbitmq_url: str) -> dict[str, list[int]]:
    """The local ports of each server kind named by the URLs (``host:port`` lists too)."""
    out: dict[str, list[int]] = {}
    for kind, urls in (("postgres", [database_url]), ("rabbitmq", rabbitmq_url.split(","))):
        ports: list[int] = []
        for url in urls:
            netloc = url.strip().split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]
            for hostport in netloc.rsplit("@", 1)[-1].split(","):
                host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
                if host.strip("[]") in LOCAL_HOSTS:
                    ports.append(int(port) if port else DEFAULT_PORTS[kind])
        out[kind] = ports
    return out


def listeners(ports: list[int]) -> dict[int, psutil.Process]:
    """The process listening on each of ``ports`` on this host (those found)."""
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports and c.pid:
                with contextlib.suppress(psutil.Error):
                    found.setdefault(c.laddr.port, psutil.Process(c.pid))
    return found


def _server_cpu(root: psutil.Process) -> float:
    """CPU seconds of a server: its root, the children it reaped, and its live descendants."""
    try:
        t = root.cpu_times()
        total = float(t.user + t.system + t.children_user + t.children_system)
        children = root.children(recursive=True)
    except psutil.Error:
        return 0.0
    return total + sum(_cpu(p) for p in children)


@dataclass(slots=True)
class Processes:
    """The service's processes, sampled for RSS and CPU time."""

    api: list[psutil.Process] = field(default_factory=list)
    worker: list[psutil.Process] = field(default_factory=list)
    peak_rss: dict[str, int] = field(default_factory=lambda: {"api": 0, "worker": 0})
    # kind -> port -> the process listening there (``server_ports``, ``listeners``).
    servers: dict[str, dict[int, psutil.Process]] = field(default_factory=dict)

    def find_servers(self, database_url: str, rabbitmq_url: str) -> None:
        for kind, ports in server_ports(database_url, rabbitmq_url).items():
            self.servers[kind] = listeners(ports)

    @staticmethod
    def tree(pid: int) -> list[psutil.Process]:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each kind (servers: every process of that name, by pid)."""
        # This process: the load generator (sending, and polling for the commits).
        out: dict[str, float] = {"load_generator": _cpu(psutil.Process())}
        for kind in ("api", "worker"):
            procs = getattr(self, kind)
            if procs:
                out[kind] = sum(_cpu(p) for p in procs)
        for kind, names in SERVERS.items():
            roots = self.servers.get(kind)
            if not roots:
                out[kind] = sum(
                    _cpu(p) for p in psutil.process_iter(["name"]) if p.info["name"] in names
                )
                continue
            per_port = {port: _server_cpu(root) for port, root in sorted(roots.items())}
            out[kind] = sum(per_port.values())
            if len(per_port) > 1:
                out.update({f"{kind}:{port}": cpu for port, cpu in per_port.items()})
        return out

    def sample_rss(self) -> None:
        """The largest peak RSS (VmHWM, kept by the kernel) of any process of each kind."""
        for kind in ("api", "worker"):
            for p in getattr(self, kind):
                self.peak_rss[kind] = max(self.peak_rss[kind], _peak_rss(p))


def _peak_rss(process: psutil.Process) -> int:
    try:
        with open(f"/proc/{process.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    with contextlib.suppress(psutil.Error):
        return int(process.memory_info().rss)
    return 0


def _cpu(process: psutil.Process) -> float:
    try:
        t = process.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def started_service(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """API (gunicorn) + worker as child processes against a scratch database."""
    tag = secrets.token_hex(4)
    base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/events")
    database_url = urlunsplit(urlsplit(base)._replace(path=f"/events_bench_{tag}"))
    port = free_port()
    key = secrets.token_urlsafe(16)
    lake = tempfile.mkdtemp(prefix="events-bench-lake-")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "API_KEY": key,
        "EVENTS_QUEUE_PREFIX": f"bench_{tag}",
        "EVENTS_LOG_LEVEL": "WARNING",
        "EVENTS_LAKE_DIR": lake,
    }
    cli = [sys.executable, "-m", "service.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    api_cmd = [*cli, "serve", "--bind", f"127.0.0.1:{port}", "--no-migrate"]
    if args.api_workers:
        api_cmd += ["--workers", str(args.api_workers)]
    worker_cmd = [*cli, "worker", "--no-migrate"]
    if args.worker_processes:
        worker_cmd += ["--processes", str(args.worker_processes)]
    logs = open(os.path.join(lake, "service.log"), "w")  # noqa: SIM115
    procs = [subprocess.Popen(api_cmd, env=env, stderr=logs)]

    def start_worker() -> int:
        procs.append(subprocess.Popen(worker_cmd, env=env, stderr=logs))
        return procs[-1].pid

    try:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "key": key,
            "database_url": database_url,
            "api_pid": procs[0].pid,
            # With --backlog the worker starts only once every event is queued.
            "worker_pid": None if args.backlog else start_worker(),
            "start_worker": start_worker,
            "queue_prefix": f"bench_{tag}",
        }
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()
        asyncio.run(drop_database(database_url))
        delete_queues_of(env)
        shutil.rmtree(lake, ignore_errors=True)


def delete_queues_of(env: dict[str, str]) -> None:
    from core.config import load_settings  # noqa: PLC0415
    from pipeline.broker import connect  # noqa: PLC0415
    from pipeline.topology import Topology, delete_queues  # noqa: PLC0415

    async def run() -> None:
        settings = load_settings(env)
        connection = await connect(settings.rabbitmq_url, timeout=10)
        try:
            await delete_queues(connection, Topology.from_settings(settings))
        finally:
            await connection.close()

    asyncio.run(run())


async def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the service at {url} did not become ready")


async def send(
    url: str,
    key: str,
    bodies: list[bytes],
    *,
    fmt: str,
    gzipped: bool,
    concurrency: int,
    events_per_body: list[int],
    progress: bool,
) -> tuple[list[float], dict[int, int], float, float]:
    headers = {"X-API-Key": key, "Content-Type": CONTENT_TYPES[fmt]}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)
    bar = tqdm(
        total=sum(events_per_body),
        unit="ev",
        unit_scale=True,
        desc="sending",
        disable=not progress,
        file=sys.stderr,
    )
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def sender() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                t = time.perf_counter()
                async with http.post(url + "/events", data=bodies[i]) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                latencies.append(time.perf_counter() - t)
                bar.update(events_per_body[i])

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        accepted_at = time.perf_counter()
    bar.close()
    return latencies, statuses, started, accepted_at


async def wait_committed(
    database_url: str, expected: int, processes: Processes, timeout: float
) -> float:
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            processes.sample_rss()
            stored = await conn.fetchval("SELECT coalesce(sum(events), 0) FROM ingest_batches")
            if stored >= expected:
                return time.perf_counter()
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    raise TimeoutError("not every event was committed in time")


CEILING_TABLE = """
CREATE TABLE bench_ceiling (
    event_id uuid PRIMARY KEY, occurred_at timestamptz NOT NULL, user_id text NOT NULL,
    event_type text NOT NULL, properties jsonb NOT NULL
);
"""
# The keys the write path maintains per event: the event_id ledger's primary key. (The
# raw-row indexes of a day are built once the day is over; see storage/partitions.py.)


async def ceiling(database_url: str, table: pa.Table) -> tuple[float, float]:
    """Seconds for the dedupe COPY and for the raw COPY of the rows (see the module doc)."""
    conn = await asyncpg.connect(database_url)
    payload = encode_binary(table, jsonb=("properties",))
    columns = list(EVENT_SCHEMA.names)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_ceiling")
        await conn.execute(CEILING_TABLE)
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE bench_stage (LIKE bench_ceiling INCLUDING DEFAULTS) "
                "ON COMMIT DROP"
            )
            await conn.copy_to_table(
                "bench_stage", source=_source(payload), columns=columns, format="binary"
            )
            await conn.execute(
                "INSERT INTO bench_ceiling SELECT * FROM bench_stage "
                "ON CONFLICT (event_id) DO NOTHING"
            )
        dedupe = time.perf_counter() - started
        await conn.execute("DROP TABLE bench_ceiling")
        await conn.execute(CEILING_TABLE)
        started = time.perf_counter()
        await conn.copy_to_table(
            "bench_ceiling", source=_source(payload), columns=columns, format="binary"
        )
        raw = time.perf_counter() - started
        await conn.execute("DROP TABLE bench_ceiling")
        return dedupe, raw
    finally:
        await conn.close()


async def _source(payload: bytes) -> Any:
    view = memoryview(payload)
    for i in range(0, len(view), 1 << 20):
        yield view[i : i + (1 << 20)]


async def dau_latency(url: str, key: str, first: str, last: str) -> float:
    async with aiohttp.ClientSession(headers={"X-API-Key": key}) as http:
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            async with http.get(url + "/stats/dau", params={"from": first, "to": last}) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"DAU query answered {r.status}")
            samples.append(time.perf_counter() - t)
        return statistics.median(samples)


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30),
        "cpu_model": model,
        "python": platform.python_version(),
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(args: argparse.Namespace, service: dict[str, Any]) -> dict[str, Any]:
    table = generate(args.events, users=args.users, days=args.days, seed=args.seed)
    bodies = serialise(table, args.format, args.batch, 1 if args.gzip else None)
    per_body = [min(args.batch, args.events - i) for i in range(0, args.events, args.batch)]
    processes = Processes()
    await wait_ready(service["url"])
    # After readiness: gunicorn has forked its workers by then.
    if service.get("api_pid"):
        processes.api = Processes.tree(service["api_pid"])
    if service.get("worker_pid"):
        processes.worker = Processes.tree(service["worker_pid"])
    processes.find_servers(
        service["database_url"],
        os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    )
    before = await _stored(service["database_url"])
    cpu0 = processes.cpu()
    latencies, statuses, started, accepted_at = await send(
        service["url"],
        service["key"],
        bodies,
        fmt=args.format,
        gzipped=args.gzip,
        concurrency=args.concurrency,
        events_per_body=per_body,
        progress=not args.json,
    )
    drain_started = None
    if args.backlog:
        # Everything is queued; now the worker starts on the whole backlog.
        drain_started = time.perf_counter()
        processes.worker = Processes.tree(service["start_worker"]())
    committed_at = await wait_committed(
        service["database_url"], before + args.events, processes, args.timeout
    )
    cpu1 = processes.cpu()
    processes.sample_rss()
    end_to_end = args.events / (committed_at - started)
    ceiling_s, raw_copy_s = (
        await ceiling(service["database_url"], table) if not args.no_ceiling else (None, None)
    )
    days = table.column("occurred_at").cast(pa.timestamp("us")).cast(pa.date32())
    first = str(min(days.to_pylist()))
    last = str(max(days.to_pylist()))
    return {
        "events": args.events,
        "format": args.format + ("+gzip" if args.gzip else ""),
        "batch": args.batch,
        "concurrency": args.concurrency,
        "statuses": statuses,
        "accept_events_per_s": round(args.events / (accepted_at - started)),
        "end_to_end_events_per_s": round(end_to_end),
        "backlog_drain_events_per_s": round(args.events / (committed_at - drain_started))
        if drain_started
        else None,
        "latency_ms": {
            p: round(percentile(latencies, q) * 1000, 1)
            for p, q in (("p50", 50), ("p95", 95), ("p99", 99))
        },
        "ceiling_events_per_s": round(args.events / ceiling_s) if ceiling_s else None,
        "end_to_end_vs_ceiling": round(end_to_end / (args.events / ceiling_s), 2)
        if ceiling_s
        else None,
        "raw_copy_events_per_s": round(args.events / raw_copy_s) if raw_copy_s else None,
        "end_to_end_vs_raw_copy": round(end_to_end / (args.events / raw_copy_s), 2)
        if raw_copy_s
        else None,
        "peak_rss_mb": {k: round(v / 2**20) for k, v in processes.peak_rss.items() if v},
        "cpu_s_per_1000_events": {
            k: round((cpu1[k] - cpu0.get(k, 0.0)) / args.events * 1000, 4) for k in cpu1
        },
        "dau_query_ms": round(
            await dau_latency(service["url"], service["key"], first, last) * 1000, 1
        ),
        "machine": machine(),
    }


async def _stored(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(events), 0) FROM ingest_batches"))
    finally:
        await conn.close()


def render(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    m = result["machine"]
    rows = [
        ("machine", f"{m['cpus']} cores, {m['memory_gib']} GiB, {m['cpu_model']}"),
        (
            "events / format / batch",
            f"{result['events']:,} / {result['format']} / "
            f"{result['batch']} per request, {result['concurrency']} "
            "connections",
        ),
        ("answers", ", ".join(f"{k}: {v}" for k, v in result["statuses"].items())),
        ("accepted (202)", f"{result['accept_events_per_s']:,} events/s"),
        ("end to end (committed)", f"{result['end_to_end_events_per_s']:,} events/s"),
        *(
            [("backlog drained", f"{result['backlog_drain_events_per_s']:,} events/s")]
            if result.get("backlog_drain_events_per_s")
            else []
        ),
        ("request latency", f"p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms"),
    ]
    if result["ceiling_events_per_s"]:
        rows.append(
            (
                "ceiling (dedupe COPY)",
                f"{result['ceiling_events_per_s']:,} events/s; "
                f"end to end = {result['end_to_end_vs_ceiling']:.0%}",
            )
        )
        rows.append(
            (
                "raw COPY (no dedupe)",
                f"{result['raw_copy_events_per_s']:,} events/s; "
                f"end to end = {result['end_to_end_vs_raw_copy']:.0%}",
            )
        )
    for kind, mb in result["peak_rss_mb"].items():
        rows.append((f"peak RSS {kind}", f"{mb} MB"))
    for kind, cpu in result["cpu_s_per_1000_events"].items():
        rows.append((f"CPU {kind}", f"{cpu * 1000:.1f} ms per 1,000 events"))
    rows.append(
        (
            "",
            "(postgres and rabbitmq: every process of the servers on the URLs' local ports, "
            "all nodes summed, each port apart too; the ceiling's COPY excluded)",
        )
    )
    rows.append(("DAU over the loaded range", f"{result['dau_query_ms']} ms"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--start", action="store_true", help="start the API and a worker against a scratch database"
    )
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--key", default=os.environ.get("API_KEY", ""))
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/events"),
    )
    p.add_argument("--api-pid", type=int, help="gunicorn master pid (without --start)")
    p.add_argument("--worker-pid", type=int, help="worker pid (without --start)")
    p.add_argument("--api-workers", type=int, help="with --start: gunicorn workers")
    p.add_argument("--worker-processes", type=int, help="with --start: worker processes")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--format", choices=sorted(CONTENT_TYPES), default="json")
    p.add_argument("--gzip", action="store_true")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--no-ceiling", action="store_true")
    p.add_argument(
        "--backlog",
        action="store_true",
        help="with --start: queue every event first, then start the worker "
        "(peak memory with a backlog, and the rate it drains it)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    if args.start:
        with started_service(args) as service:
            result = asyncio.run(measure(args, service))
    else:
        service = {
            "url": args.url,
            "key": args.key,
            "database_url": args.database_url,
            "api_pid": args.api_pid,
            "worker_pid": args.worker_pid,
        }
        result = asyncio.run(measure(args, service))
    print(json.dumps(result) if args.json else render(result))
    return 0


def main() -> None:
    p = argparse.ArgumentParser(
        prog="events bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    sys.exit(run(p.parse_args()))


if __name__ == "__main__":
    main()
