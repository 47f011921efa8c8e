"""``events sql``: one read-only DuckDB query over the whole store (``analytics/console.py``)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from core.config import Settings

DESCRIPTION = (
    "Run one query over the view events (every published lake file plus the hot rows, from "
    "one snapshot). Only queries that read run (SELECT, FROM, WITH, VALUES, DESCRIBE, SHOW, "
    "SUMMARIZE, EXPLAIN); anything else is refused with exit status 2. DuckDB can reach no "
    "file and writes no temporary file: a query that does not fit in memory fails. Exit "
    "status 1 when the query fails."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", help='e.g. "SELECT event_type, count(*) FROM events GROUP BY 1"')
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")


def run(settings: Settings, args: argparse.Namespace) -> int:
    import duckdb
    import pyarrow as pa

    from analytics.console import NotARead, check_read_only, open_session, print_result, snapshot
    from storage.lake import Lake, LakeUnreadable

    try:
        check_read_only(args.query)  # before PostgreSQL is asked anything
    except NotARead as ex:
        print(f"events sql: {ex}", file=sys.stderr)
        return 2
    except duckdb.Error as ex:  # it does not parse
        print(f"events sql: {ex}", file=sys.stderr)
        return 1
    try:
        files, hot = asyncio.run(snapshot(settings.database_url, Lake(settings.lake_dir)))
        con = open_session(files, hot)
    except LakeUnreadable as ex:
        print(f"events sql: {ex}; `events lake verify` lists every problem", file=sys.stderr)
        return 1
    try:
        print_result(con, args.query, args.format)
    except (duckdb.Error, pa.ArrowException, OSError) as ex:
        print(f"events sql: {ex}", file=sys.stderr)
        return 1
    finally:
        con.close()
    return 0
