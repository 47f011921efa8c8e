"""A lake mixing files from before property columns with files that have different ones:
the console, ``events lake verify`` and the endpoints read it as they read a uniform one."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import polars as pl
import pyarrow.parquet as pq

from analytics.console import COLUMNS, open_session, snapshot
from core.config import Settings
from pipeline.steps.write import stage_messages as stage
from storage.bulk import to_lake_rows
from storage.compactor import Compactor, record_files
from storage.lake import LAKE_SCHEMA, Lake, LakeFile, file_sha256, read_stats
from tests.analytics.conftest import EXTRA, SAMPLE_TODAY, Truth
from tests.analytics.test_console import sql_cli
from tests.analytics.test_endpoints import check_all
from tests.conftest import new_event
from tests.storage.test_lake_properties import write_old_style
from tests.storage.test_lake_verify import verify_cli
from tests.storage.test_writer import batch

# Days of the sample's range: 2025-07-30 gets the lake's first file (old style, so later
# files have columns it lacks); 2025-08-05 a second, old-style file beside the compactor's
# (whose columns it lacks); 2025-08-02 a second new one with columns no other file has.
OLD_FIRST = [
    new_event(
        user_id=f"old{i}",
        event_type="purchase",
        occurred_at="2025-07-30T10:00:00Z",
        properties={"country": "UA", "price": 1},
    )
    for i in range(3)
]
OLD_BESIDE = [
    new_event(
        user_id=f"old{i}",
        event_type="view_item",
        occurred_at=f"2025-08-05T1{i}:00:00Z",
        properties={"country": "PL"},
    )
    for i in range(4)
]
NEW_OTHER = [
    new_event(
        user_id=f"plan{i}",
        event_type="app_open",
        occurred_at="2025-08-02T08:00:00Z",
        properties={"plan": "pro", "seats": i, "device": {"os": "iOS"}},
    )
    for i in range(5)
]
ADDED = OLD_FIRST + OLD_BESIDE + NEW_OTHER


def lake_rows(events: list[dict[str, Any]]) -> Any:
    """Events in ``LAKE_SCHEMA``, through the real validation and staging."""
    return to_lake_rows(pl.DataFrame(pl.from_arrow(stage([batch(events)]).rows.table)))


async def mixed_lake(settings: Settings, lake: Lake, db: asyncpg.Connection) -> list[str]:
    """The compactor's files for days before 2025-08-25 plus the three added files."""
    report = await Compactor(
        settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY
    ).run_once()
    assert report.files > 0 and report.failed == []
    files: list[LakeFile] = []
    for day, events in ((date(2025, 7, 30), OLD_FIRST), (date(2025, 8, 5), OLD_BESIDE)):
        lake.day_dir(day).mkdir(parents=True, exist_ok=True)
        path = lake.day_dir(day) / f"part-old-{day}.parquet"
        write_old_style(path, lake_rows(events))
        size = path.stat().st_size
        files.append(LakeFile(lake.relative(path), day, len(events), size, file_sha256(path)))
    files.append(lake.write(date(2025, 8, 2), lake_rows(NEW_OTHER)))
    await record_files(db, files)
    paths = [
        str(lake.absolute(r["path"]))
        for r in await db.fetch("SELECT path FROM lake_files ORDER BY path")
    ]
    keys = {p: read_stats(p).properties for p in paths}  # type: ignore[union-attr]
    assert keys[paths[0]] == ()  # the first file DuckDB reads has no property columns
    assert keys[str(lake.absolute(files[1].path))] == ()
    assert keys[str(lake.absolute(files[2].path))] == ("device", "plan", "seats")
    assert len({*keys.values()}) >= 4  # the compactor's files differ among themselves too
    return paths


async def test_console_verify_and_endpoints_read_a_mixed_lake(
    store: tuple[Settings, Lake], db: asyncpg.Connection, tmp_path: Path
) -> None:
    settings, lake = store
    paths = await mixed_lake(settings, lake, db)
    assert len(pq.read_schema(paths[-1]).names) > len(LAKE_SCHEMA)

    files, hot = await snapshot(settings.database_url, lake)
    con = open_session(files, hot)
    try:
        assert [r[0] for r in con.execute("DESCRIBE events").fetchall()] == COLUMNS.split(", ")
        assert con.execute("SELECT count(*) FROM events").fetchall() == [(5003 + len(ADDED),)]
        rows = con.execute("SELECT * FROM events").fetchall()
        assert len(rows) == 5003 + len(ADDED)
        plans = con.execute(
            "SELECT count(*) FROM events WHERE json_extract_string(properties, '$.plan') = 'pro'"
        ).fetchall()
        assert plans == [(len(NEW_OTHER),)]
    finally:
        con.close()

    sql = sql_cli(
        settings, tmp_path, "SELECT * FROM events WHERE user_id LIKE 'old%'", "--format", "json"
    )
    assert sql.returncode == 0, sql.stderr
    answer = json.loads(sql.stdout)
    assert len(answer) == len(OLD_FIRST) + len(OLD_BESIDE)
    assert {tuple(r) for r in answer} == {tuple(COLUMNS.split(", "))}

    verify = verify_cli(settings)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    n = len(paths)
    assert f"{n} recorded file(s), {n} intact" in verify.stdout

    await check_all(settings, Truth(tmp_path, EXTRA + ADDED))
