"""Worker write path alone: frame + encode, then COPY + ledger + insert + commit.

    python -m bench.writer --events 200000 --connections 1 2

Uses a scratch database (dropped first). Events are generated and validated before the
clock starts; `stage` is timed on its own, then the writes, `--connections` at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from datetime import UTC, datetime

import asyncpg

from bench.harness import generate
from core.ids import uuid7
from pipeline.message import BatchMeta, DecodedBatch
from pipeline.steps.write import stage_messages as stage
from storage.db import drop_database
from storage.migrate import migrate
from storage.writer import EventWriter, StagedRows, create_writer_pool


def prepare(n: int, per_message: int, per_commit: int) -> list[list[DecodedBatch]]:
    events = generate(n, seed=5, users=10_000, days=30)
    now = datetime.now(UTC)
    messages = [
        DecodedBatch(events.slice(i, per_message), BatchMeta(uuid7(), now, "key_bench", "json"))
        for i in range(0, n, per_message)
    ]
    per = max(1, per_commit // per_message)
    return [messages[i : i + per] for i in range(0, len(messages), per)]


async def write_all(url: str, staged: list[StagedRows], connections: int) -> float:
    pool = await create_writer_pool(url, size=connections)
    writer = EventWriter(pool, notify_channel="bench_committed")
    gate = asyncio.Semaphore(connections)

    async def one(rows: StagedRows) -> None:
        async with gate:
            await writer.write(rows)

    started = time.perf_counter()
    await asyncio.gather(*(one(s) for s in staged))
    elapsed = time.perf_counter() - started
    await pool.close()
    return elapsed


async def run(args: argparse.Namespace) -> list[dict[str, object]]:
    micro_batches = prepare(args.events, args.per_message, args.per_commit)
    started = time.perf_counter()
    staged = [stage(m) for m in micro_batches]
    stage_rate = args.events / (time.perf_counter() - started)
    results = []
    for connections in args.connections:
        await drop_database(args.database_url)
        await migrate(args.database_url)
        conn = await asyncpg.connect(args.database_url)
        # Create the days' partitions first: measured is the steady state, not DDL.
        days = sorted({d for s in staged for d in s.rows.days})
        await conn.fetchval("SELECT events_ensure_partitions($1::date[])", days)
        await conn.close()
        elapsed = await write_all(args.database_url, staged, connections)
        results.append(
            {
                "events": args.events,
                "rows_per_commit": args.per_commit,
                "connections": connections,
                "stage_events_per_s": round(stage_rate),
                "write_events_per_s": round(args.events / elapsed),
                "cpus": os.cpu_count(),
            }
        )
    await drop_database(args.database_url)
    return results


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/events_bench_writer"
    )
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--per-message", type=int, default=1000)
    p.add_argument("--per-commit", type=int, default=20_000)
    p.add_argument("--connections", type=int, nargs="+", default=[1, 2])
    for line in asyncio.run(run(p.parse_args())):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
