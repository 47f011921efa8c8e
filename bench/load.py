"""Load generator: POST generated events to a running service and time the whole path.

    python -m bench.load --url http://127.0.0.1:8000 --key KEY --events 100000

Reports the accept rate (events/s until the last 202), the end-to-end rate (events/s from
the first request until every event is committed in PostgreSQL, read from
``ingest_batches``) and request latency percentiles. Events are generated (seeded) and
serialised before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pyarrow as pa

EVENT_TYPES = ["app_open", "view_item", "add_to_cart", "purchase", "login", "logout"]
COUNTRIES = ["UA", "PL", "DE", "SE", "NL", "RO", "KZ", "US"]


def generate(n: int, *, seed: int, users: int, days: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)
    span = days * 86_400
    out = []
    for _ in range(n):
        et = rng.choice(EVENT_TYPES)
        props: dict[str, Any] = {
            "country": rng.choice(COUNTRIES),
            "session_id": f"{rng.getrandbits(32):08x}",
        }
        if et in ("view_item", "add_to_cart", "purchase"):
            props["item_id"] = f"SKU{rng.randrange(10_000)}"
            props["price"] = round(rng.uniform(1, 500), 2)
        out.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "occurred_at": (start + timedelta(seconds=rng.randrange(span))).isoformat(),
                "user_id": rng.randrange(1, users + 1),
                "event_type": et,
                "properties": props,
            }
        )
    return out


def encode(batch: list[dict[str, Any]], fmt: str) -> tuple[bytes, str]:
    if fmt == "json":
        return orjson.dumps(batch), "application/json"
    if fmt == "ndjson":
        return b"\n".join(orjson.dumps(e) for e in batch), "application/x-ndjson"
    table = pa.table(
        {
            "event_id": pa.array([uuid.UUID(e["event_id"]).bytes for e in batch], pa.binary(16)),
            "occurred_at": pa.array(
                [datetime.fromisoformat(e["occurred_at"]) for e in batch],
                pa.timestamp("us", tz="UTC"),
            ),
            "user_id": pa.array([e["user_id"] for e in batch], pa.int64()),
            "event_type": pa.array([e["event_type"] for e in batch]).dictionary_encode(),
            "properties": pa.array([orjson.dumps(e["properties"]).decode() for e in batch]),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue()), "application/vnd.apache.arrow.stream"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    events = generate(args.events, seed=args.seed, users=args.users, days=args.days)
    bodies = [
        encode(events[i : i + args.batch], args.format) for i in range(0, len(events), args.batch)
    ]
    db = await asyncpg.connect(args.database_url)
    before = await db.fetchval("SELECT coalesce(sum(events), 0) FROM ingest_batches")
    queue: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(
        base_url=args.url, timeout=60, limits=limits, headers={"X-API-Key": args.key}
    ) as http:

        async def sender() -> None:
            while not queue.empty():
                body, ctype = queue.get_nowait()
                t = time.perf_counter()
                r = await http.post("/events", content=body, headers={"Content-Type": ctype})
                latencies.append(time.perf_counter() - t)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(args.concurrency)))
        accepted_at = time.perf_counter()
    target = before + args.events
    while True:
        stored = await db.fetchval("SELECT coalesce(sum(events), 0) FROM ingest_batches")
        if stored >= target or time.perf_counter() - accepted_at > args.timeout:
            break
        await asyncio.sleep(0.01)
    committed_at = time.perf_counter()
    await db.close()
    return {
        "events": args.events,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "format": args.format,
        "statuses": statuses,
        "accept_events_per_s": round(args.events / (accepted_at - t0)),
        "end_to_end_events_per_s": round(args.events / (committed_at - t0)),
        "all_committed": stored >= target,
        "latency_ms": {
            "p50": round(percentile(latencies, 50) * 1000, 1),
            "p95": round(percentile(latencies, 95) * 1000, 1),
            "p99": round(percentile(latencies, 99) * 1000, 1),
            "mean": round(statistics.fmean(latencies) * 1000, 1),
        },
        "machine": {"cpus": os.cpu_count()},
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--key", default=os.environ.get("API_KEY", ""))
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/events"),
    )
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--format", choices=["json", "ndjson", "arrow"], default="json")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300)
    print(json.dumps(asyncio.run(run(p.parse_args())), indent=2))


if __name__ == "__main__":
    main()
