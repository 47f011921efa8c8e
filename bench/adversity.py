"""What each hostile request costs the service, measured on a running API process.

    python -m bench.adversity                      # starts an API (1 gunicorn worker)
    python -m bench.adversity --service-root DIR   # the same against another checkout

For every attack of ``bench/attacks.py``: the answer, the peak RSS growth of the API process
and of its decoding processes (the kernel's VmHWM, reset before each attack), the CPU time the
service spent on it, and ``/healthz`` latency while it was in flight (a probe every 10 ms on
its own connection). Then three maximal bodies sent at once (three 32 MiB NDJSON bodies of
``{}`` lines, and three valid 32 MiB batches), with ``/healthz`` p99 meanwhile. One API
worker, so the probe and the attack share the process whose event loop is at stake.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from bench.attacks import ATTACKS, MAX_BODY, NDJSON, VENDOR_ATTACKS, Attack, ndjson_empty_objects
from bench.harness import delete_queues_of, free_port, machine, percentile
from storage.db import drop_database


def _status_value(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class Tree:
    """The API worker process and its children (the decoding processes)."""

    def __init__(self, master_pid: int) -> None:
        self.master = psutil.Process(master_pid)

    def processes(self) -> dict[str, psutil.Process]:
        workers = self.master.children()
        out: dict[str, psutil.Process] = {}
        for worker in workers:
            out["api"] = worker
            for i, child in enumerate(worker.children(recursive=True)):
                out[f"child{i}"] = child
        return out

    def reset_peaks(self) -> dict[int, int]:
        """Reset VmHWM of every process; their RSS now (the base of the growth)."""
        base = {}
        for p in self.processes().values():
            with contextlib.suppress(OSError), open(f"/proc/{p.pid}/clear_refs", "w") as f:
                f.write("5")
            base[p.pid] = _status_value(p.pid, "VmRSS")
        return base

    def growth(self, base: dict[int, int]) -> dict[str, int]:
        """Peak RSS growth since ``reset_peaks``: the API process, and the largest child."""
        api, child = 0, 0
        for name, p in self.processes().items():
            grown = _status_value(p.pid, "VmHWM") - base.get(p.pid, 0)
            if name == "api":
                api = grown
            else:
                child = max(child, grown)
        return {"api": max(0, api), "decoder": max(0, child)}

    def cpu(self) -> float:
        total = 0.0
        for p in self.processes().values():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total


class Probe:
    """``GET /healthz`` every 10 ms on its own connection; latencies in ms."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    answer = await http.get("/healthz")
                    if answer.status_code != 200:
                        self.failures += 1
                except httpx.HTTPError:
                    self.failures += 1
                self.latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.01)

    def __enter__(self) -> Probe:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._task is not None:
            await self._task
        values = self.latencies or [0.0]
        return {
            "healthz_p50_ms": round(percentile(values, 50), 1),
            "healthz_p99_ms": round(percentile(values, 99), 1),
            "healthz_max_ms": round(max(values), 1),
            "healthz_probes": len(self.latencies),
            "healthz_failures": self.failures,
        }

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


async def _post(http: httpx.AsyncClient, attack: Attack) -> tuple[int | str, str, float]:
    started = time.perf_counter()
    try:
        answer = await http.post(
            attack.path,
            content=attack.body,
            headers={"Content-Type": attack.content_type, **attack.headers},
        )
    except httpx.TransportError as ex:
        # The API process died on it (killed for its memory, say): gunicorn starts another.
        return "dropped", type(ex).__name__, time.perf_counter() - started
    elapsed = time.perf_counter() - started
    code = ""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        doc = answer.json()
        # Ours: {"error": {"code"}}; a vendor's dialect: "code" (Amplitude: "error_code").
        code = doc.get("error_code") or (
            doc["code"] if isinstance(doc.get("code"), str) else doc["error"]["code"]
        )
        if code == "no_valid_events":
            code = ",".join(sorted({r["code"] for r in doc["rejected"]}))
    return answer.status_code, code, elapsed


async def measure(url: str, key: str, tree: Tree) -> dict[str, Any]:
    headers = {"X-API-Key": key}
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        # Warm up: the first large body starts the decoding process.
        await http.post(
            "/events", content=_valid_body(2 * 1024 * 1024), headers={"Content-Type": NDJSON}
        )
        for make in (*ATTACKS, *VENDOR_ATTACKS):
            attack = make()
            base = tree.reset_peaks()
            cpu = tree.cpu()
            with Probe(url) as probe:
                await asyncio.sleep(0.05)
                status, code, elapsed = await _post(http, attack)
                healthz = await probe.stop()
            growth = _growth_mb(tree, base)
            cpu_s = round(tree.cpu() - cpu, 3)
            if status == "dropped":
                await _ready(url)
            rows.append(
                {
                    "attack": attack.name,
                    "what": attack.what,
                    "body_bytes": len(attack.body),
                    "status": status,
                    "code": code,
                    "expected": f"{attack.status} {attack.code}",
                    "seconds": round(elapsed, 3),
                    "cpu_s": cpu_s,
                    **growth,
                    **healthz,
                }
            )
        for name, bodies in (
            ("3 x ndjson_empty_objects at once", [ndjson_empty_objects() for _ in range(3)]),
            ("3 x valid 32 MiB NDJSON batches at once", [_valid_attack() for _ in range(3)]),
        ):
            base = tree.reset_peaks()
            cpu = tree.cpu()
            with Probe(url) as probe:
                await asyncio.sleep(0.05)
                started = time.perf_counter()
                answers = await asyncio.gather(*(_post(http, a) for a in bodies))
                elapsed = time.perf_counter() - started
                healthz = await probe.stop()
            rows.append(
                {
                    "attack": name,
                    "what": "",
                    "body_bytes": sum(len(a.body) for a in bodies),
                    "status": "/".join(str(s) for s, _, _ in answers),
                    "code": "/".join(c for _, c, _ in answers),
                    "expected": "",
                    "seconds": round(elapsed, 3),
                    "cpu_s": round(tree.cpu() - cpu, 3),
                    **_growth_mb(tree, base),
                    **healthz,
                }
            )
    return {"machine": machine(), "attacks": rows}


def _growth_mb(tree: Tree, base: dict[int, int]) -> dict[str, int]:
    return {f"rss_growth_{k}_mb": round(v / 2**20) for k, v in tree.growth(base).items()}


def _valid_body(size: int) -> bytes:
    line = orjson.dumps(
        {
            "event_id": "00000000-0000-4000-8000-000000000000",
            "occurred_at": "2025-08-21T06:52:34+03:00",
            "user_id": "u1",
            "event_type": "view",
            "properties": {"pad": "x" * 500},
        }
    )
    lines = []
    for i in range(min(size // (len(line) + 1), 50_000)):
        event_id = f"00000000-0000-4000-8000-{i:012d}".encode()
        lines.append(line.replace(b"00000000-0000-4000-8000-000000000000", event_id))
    return b"\n".join(lines)


def _valid_attack() -> Attack:
    # 50,000 events (the limit) of about 640 bytes: a 32 MiB body that is all valid.
    line_bytes = MAX_BODY // 50_000 - 1
    pad = "x" * (line_bytes - 160)
    lines = [
        orjson.dumps(
            {
                "event_id": f"00000000-0000-4000-8000-{secrets.randbelow(10**12):012d}",
                "occurred_at": "2025-08-21T06:52:34+03:00",
                "user_id": f"u{i}",
                "event_type": "view",
                "properties": {"pad": pad},
            }
        )
        for i in range(50_000)
    ]
    return Attack("valid", NDJSON, b"\n".join(lines), 202, "")


@contextmanager
def started_api(service_root: Path, memory_mb: int) -> Iterator[dict[str, Any]]:
    """``events serve`` (one gunicorn worker) from ``service_root`` on a scratch database,
    each of its processes limited to ``memory_mb`` of address space (0: no limit), so an
    attack that would take the whole machine kills only the API process."""
    tag = secrets.token_hex(4)
    base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/events")
    database_url = base.rsplit("/", 1)[0] + f"/events_adversity_{tag}"
    port = free_port()
    key = secrets.token_urlsafe(16)
    lake = tempfile.mkdtemp(prefix="events-adversity-")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "API_KEY": key,
        "EVENTS_QUEUE_PREFIX": f"adversity_{tag}",
        "EVENTS_LOG_LEVEL": "WARNING",
        "EVENTS_LAKE_DIR": lake,
        "PYTHONPATH": str(service_root),
    }
    cli = [sys.executable, "-m", "service.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True, cwd=service_root)
    log = open(os.path.join(lake, "api.log"), "w")  # noqa: SIM115

    def limit() -> None:
        if memory_mb:
            size = memory_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    api = subprocess.Popen(
        [*cli, "serve", "--bind", f"127.0.0.1:{port}", "--no-migrate", "--workers", "1"],
        env=env,
        stderr=log,
        cwd=service_root,
        preexec_fn=limit,  # noqa: PLW1509 - only sets a resource limit before exec
    )
    try:
        yield {"url": f"http://127.0.0.1:{port}", "key": key, "pid": api.pid}
    finally:
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(timeout=60)
        except subprocess.TimeoutExpired:
            api.kill()
        log.close()
        asyncio.run(drop_database(database_url))
        delete_queues_of(env)
        shutil.rmtree(lake, ignore_errors=True)


async def _ready(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError("the API did not become ready")


def render(result: dict[str, Any]) -> str:
    head = (
        "| Attack | Body | Answer | Expected | s | CPU s | Peak RSS growth API / decoder | "
        "/healthz p50 / p99 / max |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in result["attacks"]:
        lines.append(
            f"| {r['attack']} | {r['body_bytes'] / 2**20:.1f} MiB | {r['status']} {r['code']} | "
            f"{r['expected']} | {r['seconds']} | {r['cpu_s']} | "
            f"{r['rss_growth_api_mb']} / {r['rss_growth_decoder_mb']} MB | "
            f"{r['healthz_p50_ms']} / {r['healthz_p99_ms']} / {r['healthz_max_ms']} ms |"
        )
    m = result["machine"]
    lines.append("")
    lines.append(f"Machine: {json.dumps(m)}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.adversity", description=__doc__)
    p.add_argument(
        "--service-root",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="checkout whose `events serve` is measured (default: this one)",
    )
    p.add_argument(
        "--memory-mb",
        type=int,
        default=8192,
        help="address-space limit of each API process (0: none); protects the machine",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with started_api(args.service_root, args.memory_mb) as api:
        asyncio.run(_ready(api["url"]))
        result = asyncio.run(measure(api["url"], api["key"], Tree(api["pid"])))
    result["service_root"] = str(args.service_root)
    print(json.dumps(result) if args.json else render(result))


if __name__ == "__main__":
    main()
