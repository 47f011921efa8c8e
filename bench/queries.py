"""Analytics latency over a realistic store: 10M events, 60 days, 53 cold + 7 hot.

    python -m bench.queries [--events 10000000] [--users 100000] [--calls 20]

Loads a scratch database (``events_bench_queries``) and lake through the real write path
(stage + binary COPY + ledger + rollups, 2 connections) and the real compactor, then calls
each endpoint through the ASGI app and reports median and p95 latency. Events are spread
uniformly over the last 60 UTC days; today's and the 6 days before stay hot (>= 1M rows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import duckdb
import numpy as np
import pyarrow as pa
from falcon import testing

from bench import data
from core.config import load_settings
from core.ids import uuid7
from pipeline.message import BatchMeta, DecodedBatch
from pipeline.steps.write import stage_messages as stage
from pipeline.topology import Topology, delete_queues
from service.app import create_app
from storage.compactor import Compactor
from storage.db import drop_database
from storage.lake import Lake
from storage.migrate import migrate
from storage.writer import EventWriter, create_writer_pool

EVENT_TYPES = np.array(["app_open", "view_item", "add_to_cart", "purchase", "login", "logout"])
COUNTRIES = np.array(["UA", "PL", "DE", "SE", "NL", "RO", "KZ", "US"])


def generate(n: int, users: int, days: int, today: date, seed: int) -> pa.Table:
    """``n`` events over the ``days`` days up to ``today``, users signing up over time
    (``bench/data.py``), with a country in their properties."""
    end = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
    return data.events(
        n, users=users, days=days, end=end, seed=seed, signups=True, properties=("country",)
    )


async def load(url: str, table: pa.Table, today: date, days: int, per_commit: int) -> float:
    pool = await create_writer_pool(url, size=2)
    # At load time every day is "hot", so each gets its partition, as a month of live traffic
    # would have; the compactor then moves the older days out.
    writer = EventWriter(pool, notify_channel="bench", hot_days=days, today=lambda: today)
    gate = asyncio.Semaphore(2)
    now = datetime.now(UTC)

    async def one(offset: int) -> None:
        chunk = table.slice(offset, per_commit)
        staged = await asyncio.to_thread(
            stage, [DecodedBatch(chunk, BatchMeta(uuid7(), now, "key_bench", "arrow"))]
        )
        async with gate:
            await writer.write(staged)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(0, table.num_rows, per_commit)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return elapsed


def _check(result: Any) -> None:
    if result.status_code != 200:
        raise RuntimeError(f"{result.status_code}: {result.text}")


async def timed(
    conductor: testing.ASGIConductor,
    path: str,
    params: dict[str, Any],
    calls: int,
    before: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Median and p95 of ``calls`` calls after two warm-up calls (the first of which
    builds what the process keeps: the hot mirror, the user sets; reported as
    ``first_ms``). ``before`` runs (untimed) ahead of every call."""
    first = None
    for _ in range(2):  # warm-up
        t = time.perf_counter()
        result = await conductor.simulate_get(path, params=params)
        first = first if first is not None else (time.perf_counter() - t) * 1000
        _check(result)
    samples = []
    for _ in range(calls):
        if before is not None:
            await before()
        t = time.perf_counter()
        result = await conductor.simulate_get(path, params=params)
        samples.append((time.perf_counter() - t) * 1000)
        _check(result)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 1),
        "p95_ms": round(samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))], 1),
        "first_ms": round(first or 0.0, 1),
    }


def naive_property_dau(lake_dir: Path, first: date, last: date, calls: int) -> dict[str, Any]:
    """The issue's yardstick: plain DuckDB over the same lake files, JSON parsed per row."""
    files = sorted(str(p) for p in lake_dir.glob("events/date=*/*.parquet"))
    con = duckdb.connect(config={"threads": os.cpu_count() or 1})
    sql = (
        "SELECT date, count(DISTINCT user_id) FROM read_parquet($files, hive_partitioning = true, "
        "hive_types = {'date': DATE}) WHERE date BETWEEN $first AND $last AND "
        "json_extract_string(properties, '$.country') = 'UA' GROUP BY date ORDER BY date"
    )
    args = {"files": files, "first": first, "last": last}
    for _ in range(2):
        con.execute(sql, args).fetchall()
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        con.execute(sql, args).fetchall()
        samples.append((time.perf_counter() - t) * 1000)
    con.close()
    return {"median_ms": round(statistics.median(samples), 1)}


# Each query's time as a multiple of another's, measured in the same run: the targets.
RATIOS = [
    ("dau_30d_event_type", "dau_30d", 5),
    ("dau_30d_property", "dau_30d", 5),
    ("retention_4w", "dau_30d", 5),
    ("retention_4w_property", "dau_30d", 10),
    ("funnel_3_steps_30d", "dau_30d", 10),
    ("dau_30d_property", "naive_duckdb_dau_30d_property_lake_only", 0.3),
    # The same under ingest: a 1,000-event batch committed before every call.
    ("dau_30d_event_type_after_each_write", "dau_30d", 5),
    ("dau_30d_property_after_each_write", "dau_30d", 5),
    ("retention_4w_after_each_write", "dau_30d", 5),
    ("funnel_3_steps_30d_after_each_write", "dau_30d", 10),
    ("dau_30d_property_after_each_write", "naive_duckdb_dau_30d_property_lake_only", 0.3),
]


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    today = datetime.now(UTC).date()
    lake_dir = Path(args.lake_dir)
    shutil.rmtree(lake_dir, ignore_errors=True)
    await drop_database(args.database_url)
    await migrate(args.database_url)
    table = generate(args.events, args.users, args.days, today, args.seed)
    load_s = await load(args.database_url, table, today, args.days, args.per_commit)
    started = time.perf_counter()
    report = await Compactor(
        args.database_url, Lake(lake_dir), hot_days=args.hot_days, today=lambda: today
    ).run_once()
    compact_s = time.perf_counter() - started
    results: list[dict[str, Any]] = [
        {
            "step": "load",
            "events": args.events,
            "seconds": round(load_s, 1),
            "events_per_s": round(args.events / load_s),
        },
        {
            "step": "compact",
            "days": len(report.days),
            "events": report.rows,
            "seconds": round(compact_s, 1),
            "events_per_s": round(report.rows / compact_s) if compact_s else None,
            "hot_events": args.events - report.rows,
        },
    ]
    settings = load_settings(
        {
            "DATABASE_URL": args.database_url,
            "EVENTS_LAKE_DIR": str(lake_dir),
            "EVENTS_ALLOW_NO_AUTH": "true",
            "EVENTS_LOG_LEVEL": "WARNING",
            "EVENTS_QUEUE_PREFIX": "bench_queries",
        }
    )
    first30 = (today - timedelta(days=29)).isoformat()
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("dau_30d", "/stats/dau", {"from": first30, "to": today.isoformat()}),
        ("top_events_30d", "/stats/top-events", {"from": first30, "to": today.isoformat()}),
        (
            "retention_4w",
            "/stats/retention",
            {
                "start_date": (today - timedelta(days=34)).isoformat(),
                "windows": "4",
                "granularity": "week",
            },
        ),
        (
            "dau_30d_event_type",
            "/stats/dau",
            {"from": first30, "to": today.isoformat(), "segment": "event_type:purchase"},
        ),
        (
            "dau_30d_property",
            "/stats/dau",
            {"from": first30, "to": today.isoformat(), "segment": "properties.country:UA"},
        ),
        (
            "retention_4w_property",
            "/stats/retention",
            {
                "start_date": (today - timedelta(days=34)).isoformat(),
                "windows": "4",
                "granularity": "week",
                "segment": "properties.country:UA",
            },
        ),
    ]
    last30 = today.isoformat()
    cases += [
        (
            "funnel_3_steps_30d",
            "/stats/funnel",
            {"from": first30, "to": last30, "steps": "app_open,view_item,purchase"},
        ),
        ("wau_30d", "/stats/active-users", {"from": first30, "to": last30, "window": "7"}),
        ("mau_30d", "/stats/active-users", {"from": first30, "to": last30, "window": "30"}),
        (
            "cohorts_4w_x4",
            "/stats/retention/cohorts",
            {
                "from": (today - timedelta(days=55)).isoformat(),
                "to": (today - timedelta(days=34)).isoformat(),
                "windows": "4",
                "granularity": "week",
            },
        ),
        (
            "dau_30d_breakdown_event_type",
            "/stats/dau",
            {"from": first30, "to": last30, "breakdown": "event_type"},
        ),
        (
            "dau_30d_breakdown_property",
            "/stats/dau",
            {"from": first30, "to": last30, "breakdown": "properties.country"},
        ),
        (
            "dau_30d_two_segments",
            "/stats/dau",
            {
                "from": first30,
                "to": last30,
                "segment": ["event_type:purchase", "properties.country:UA"],
            },
        ),
    ]
    pool = await create_writer_pool(args.database_url, size=1)
    writer = EventWriter(pool, notify_channel="bench", hot_days=args.days, today=lambda: today)
    fresh = iter(range(1_000_000))

    async def write_a_batch() -> None:
        """1,000 new events of today, committed: the next call must see them."""
        chunk = generate(1000, args.users, 1, today, seed=1000 + next(fresh))
        staged = await asyncio.to_thread(
            stage, [DecodedBatch(chunk, BatchMeta(uuid7(), datetime.now(UTC), "key_b", "arrow"))]
        )
        await writer.write(staged)

    async with testing.ASGIConductor(create_app(settings)) as conductor:
        for name, path, params in cases:
            results.append({"step": name, **await timed(conductor, path, params, args.calls)})
        # Under ingest: a batch committed before every call (the mirror and the sets catch up).
        under_ingest = (
            "dau_30d_event_type",
            "dau_30d_property",
            "retention_4w",
            "funnel_3_steps_30d",
        )
        for name, path, params in [c for c in cases if c[0] in under_ingest]:
            results.append(
                {
                    "step": f"{name}_after_each_write",
                    **await timed(conductor, path, params, args.calls, before=write_a_batch),
                }
            )
    await pool.close()
    naive = await asyncio.to_thread(
        naive_property_dau, lake_dir, today - timedelta(days=29), today, args.calls
    )
    results.append({"step": "naive_duckdb_dau_30d_property_lake_only", **naive})
    medians: dict[str, float] = {r["step"]: r["median_ms"] for r in results if "median_ms" in r}
    for query, against, target in RATIOS:
        if query in medians and medians.get(against):
            ratio = medians[query] / medians[against]
            results.append(
                {
                    "step": f"ratio {query} / {against}",
                    "ratio": round(ratio, 2),
                    "target": target,
                    "met": ratio <= target,
                }
            )
    for line in results:
        line["cpus"] = os.cpu_count()
    if not args.keep:
        await drop_database(args.database_url)
        shutil.rmtree(lake_dir, ignore_errors=True)
    connection = await aio_pika.connect(settings.rabbitmq_url)
    await delete_queues(connection, Topology.from_settings(settings))
    await connection.close()
    return results


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/events_bench_queries"
    )
    p.add_argument("--lake-dir", default="./bench-lake")
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--hot-days", type=int, default=7)
    p.add_argument("--per-commit", type=int, default=20_000)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the database and lake afterwards")
    for line in asyncio.run(run(p.parse_args())):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
