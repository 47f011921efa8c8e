"""``import_events`` speed on a 1,000,000-row CSV, next to a raw COPY of the same file.

    python -m bench.importer [--rows 1000000] [--hot-share 0.0]

The CSV has the shape of ``shared/data/events_sample.csv`` (CRLF, ``+03:00`` offsets,
numeric user ids, quoted JSON properties). Its events are history: spread over the 60 days
that end 8 days ago (so they go to the lake), except ``--hot-share`` of them in the hot week.
Timed end to end, as a user runs it: the ``import_events`` process, from start to exit,
against a scratch database. The ceiling is ``COPY events_raw FROM STDIN (FORMAT csv)`` of
the same file into a plain table with the events columns and a primary key on event_id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import polars as pl
import pyarrow as pa

from bench import data
from storage.db import drop_database
from storage.migrate import migrate

OFFSET = timedelta(hours=3)


def write_csv(path: Path, rows: int, hot_share: float, seed: int) -> None:
    """The CSV, from the benchmarks' generator (``bench/data.py``): history over the 60 days
    that end 7 days ago, ``hot_share`` of it in the hot week, written as the shared sample is
    (CRLF, local times at +03:00, numeric user ids, quoted JSON properties)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    hot = round(rows * hot_share)
    fields = ("country", "session_id", "item_id", "price")
    parts = [
        data.events(
            rows - hot,
            users=10_000,
            days=60,
            end=today - timedelta(days=7),
            seed=seed,
            properties=fields,
        ),
        data.events(hot, users=10_000, days=6, end=today, seed=seed + 1, properties=fields),
    ]
    frame = pl.DataFrame(pl.from_arrow(pa.concat_tables(parts)))
    hexed = pl.col("event_id").bin.encode("hex")
    frame.select(
        pl.concat_str(
            [
                hexed.str.slice(0, 8),
                hexed.str.slice(8, 4),
                hexed.str.slice(12, 4),
                hexed.str.slice(16, 4),
                hexed.str.slice(20, 12),
            ],
            separator="-",
        ).alias("event_id"),
        (pl.col("occurred_at") + OFFSET).dt.strftime("%Y-%m-%dT%H:%M:%S+03:00"),
        "user_id",
        "event_type",
        pl.col("properties").alias("properties_json"),
    ).write_csv(path, line_terminator="\r\n")


RAW_TABLE = """
CREATE TABLE events_raw (
    event_id uuid PRIMARY KEY, occurred_at timestamptz NOT NULL, user_id text NOT NULL,
    event_type text NOT NULL, properties jsonb NOT NULL
)
"""


async def raw_copy(url: str, path: Path) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS events_raw")
        await conn.execute(RAW_TABLE)
        started = time.perf_counter()
        await conn.copy_to_table("events_raw", source=str(path), format="csv", header=True)
        return time.perf_counter() - started
    finally:
        await conn.execute("DROP TABLE IF EXISTS events_raw")
        await conn.close()


def run_import(url: str, lake: Path, path: Path) -> tuple[float, str]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "EVENTS_LAKE_DIR": str(lake),
        "EVENTS_LOG_LEVEL": "WARNING",
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "importer.cli", str(path), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - started, done.stderr.strip().splitlines()[-1]


async def main_async(args: argparse.Namespace) -> list[dict[str, object]]:
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before timing
    path = work / f"events_{args.rows}.csv"
    if not path.exists():
        write_csv(path, args.rows, args.hot_share, args.seed)
    results: list[dict[str, object]] = []
    for attempt in range(args.repeat):
        await drop_database(args.database_url)
        await migrate(args.database_url)
        lake = work / "lake"
        shutil.rmtree(lake, ignore_errors=True)
        import_s, summary = run_import(args.database_url, lake, path)
        raw_s = await raw_copy(args.database_url, path)
        results.append(
            {
                "attempt": attempt + 1,
                "rows": args.rows,
                "csv_mb": round(path.stat().st_size / 2**20, 1),
                "hot_share": args.hot_share,
                "import_s": round(import_s, 2),
                "import_rows_per_s": round(args.rows / import_s),
                "raw_copy_s": round(raw_s, 2),
                "raw_copy_rows_per_s": round(args.rows / raw_s),
                "import_vs_raw_copy": round(raw_s / import_s, 2),
                "summary": summary,
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
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/events_bench_import"
    )
    p.add_argument("--work-dir", default="./bench-import")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--hot-share", type=float, default=0.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=11)
    for line in asyncio.run(main_async(p.parse_args())):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
