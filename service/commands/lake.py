"""``events lake verify``: the lake directory against ``lake_files``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from core.config import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    lake = p.add_subparsers(dest="lake_command", required=True)
    q = lake.add_parser(
        "verify",
        help="list lake files that are missing, changed or unrecorded",
        description=(
            "Compare every file recorded in lake_files with the lake directory (size, and "
            "SHA-256 where one was recorded) and list every .parquet file under "
            "<lake>/events that lake_files does not record. One line per problem (missing, "
            "changed, unreadable, unrecorded), then a summary. A compaction or import in "
            "progress shows its new files as unrecorded until it commits. Exit status: 0 "
            "intact, 1 problems found, 2 the check could not run."
        ),
    )
    q.add_argument("--json", action="store_true", help="one JSON document instead of lines")


def run(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg
    import orjson

    from storage.lake import Lake
    from storage.lake_verify import verify_lake

    try:
        report = asyncio.run(verify_lake(settings.database_url, Lake(settings.lake_dir)))
    except (OSError, TimeoutError, asyncpg.PostgresError) as ex:
        print(f"events lake verify: cannot verify the lake: {ex}", file=sys.stderr)
        return 2
    if args.json:
        print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        for problem in report.problems:
            detail = f"  ({problem.detail})" if problem.detail else ""
            print(f"{problem.kind:<10}  {problem.path}{detail}")
        print(report.summary())
    return 0 if report.ok else 1
