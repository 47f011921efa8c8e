"""A lake file that is missing, truncated, not Parquet or of another schema: every endpoint
answers 503 ``lake_unreadable`` (with Retry-After), names the file in the log only, and
never answers 500."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics.engine import unreadable_file
from analytics.queries import lake_relation
from core.config import Settings
from storage.compactor import Compactor
from storage.lake import Lake
from tests.analytics.conftest import SAMPLE_TODAY
from tests.analytics.test_endpoints import get

DAMAGED_DAY = date(2025, 8, 5)

# Every endpoint, unsegmented (footer statistics and rollups), with an event_type segment
# and with a property segment (DuckDB over the files): each reads the lake its own way.
# Every range covers DAMAGED_DAY (retention reads all history before its last window ends).
QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("/stats/dau", {"from": "2025-08-01", "to": "2025-08-10"}),
    ("/stats/dau", {"from": "2025-08-01", "to": "2025-08-10", "segment": "event_type:purchase"}),
    ("/stats/dau", {"from": "2025-08-01", "to": "2025-08-10", "segment": "properties.country:UA"}),
    ("/stats/top-events", {"from": "2025-08-01", "to": "2025-08-10"}),
    ("/stats/top-events", {"from": "2025-08-04", "to": "2025-08-06", "event_type": "purchase"}),
    ("/stats/top-events", {"from": "2025-08-04", "to": "2025-08-06", "properties.country": "UA"}),
    ("/stats/retention", {"start_date": "2025-08-01", "windows": "2", "granularity": "week"}),
    (
        "/stats/retention",
        {"start_date": "2025-08-01", "windows": "2", "granularity": "week", "event_type": "login"},
    ),
    (
        "/stats/retention",
        {"start_date": "2025-08-04", "windows": "3", "segment": "properties.country:UA"},
    ),
]
# The same queries over days after DAMAGED_DAY (retention reads every day before its end).
ELSEWHERE = [
    (path, {**params, "from": "2025-08-20", "to": "2025-08-24"})
    for path, params in QUERIES
    if path != "/stats/retention"
]


def damage(path: Path, kind: str) -> None:
    if kind == "missing":
        path.unlink()
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "not_parquet":
        path.write_bytes(b"event_id,occurred_at\n" * 100)
    else:  # foreign_schema: what `COPY (SELECT 42 AS pwned) TO '<file>'` left behind
        pq.write_table(pa.table({"pwned": [42]}), path)


@pytest.mark.parametrize(
    ("kind", "size_recorded"),
    [
        ("missing", False),
        ("truncated", False),
        ("not_parquet", False),
        ("foreign_schema", False),
        # The recorded size updated to the damaged file's: the stat check passes, so DuckDB's
        # and pyarrow's errors are what must be recognised.
        ("truncated", True),
        ("not_parquet", True),
        ("foreign_schema", True),
    ],
)
async def test_a_damaged_lake_file_is_503_lake_unreadable_on_every_endpoint(
    store: tuple[Settings, Lake],
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    size_recorded: bool,
) -> None:
    settings, lake = store
    report = await Compactor(
        settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY
    ).run_once()
    assert DAMAGED_DAY in report.days
    for path, params in ELSEWHERE:
        result = await get(settings, path, params)
        assert result.status_code == 200, (path, params, result.text)

    (damaged,) = lake.files_on_disk(DAMAGED_DAY)
    damage(damaged, kind)
    if size_recorded:
        await db.execute(
            "UPDATE lake_files SET bytes = $2 WHERE path = $1",
            lake.relative(damaged),
            damaged.stat().st_size,
        )
    for path, params in QUERIES:
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="analytics.http"):
            result = await get(settings, path, params)
        assert result.status_code == 503, (path, params, result.text)
        assert result.json["error"]["code"] == "lake_unreadable", (path, params)
        assert result.headers["Retry-After"] == "30"
        for secret in (str(damaged), damaged.name, str(lake.root)):
            assert secret not in result.text, (path, params)
        logged = [r for r in caplog.records if r.getMessage() == "a lake file cannot be read"]
        assert [getattr(r, "path", None) for r in logged] == [str(damaged)], (path, params)

    # Queries that do not read the damaged file still answer.
    for path, params in ELSEWHERE:
        result = await get(settings, path, params)
        assert result.status_code == 200, (path, params, result.text)


async def test_an_error_that_is_not_the_lakes_stays_an_error(store: tuple[Settings, Lake]) -> None:
    """A failing statement over intact files is not blamed on the lake (a bug stays a 500)."""
    settings, lake = store
    await Compactor(settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY).run_once()
    files = [str(p) for p in sorted(lake.root.rglob("part-*.parquet"))]
    assert len(files) > 1
    con = duckdb.connect()
    try:
        with pytest.raises(duckdb.BinderException) as bug:
            con.execute(f"SELECT no_such_column FROM {lake_relation(files)}")
    finally:
        con.close()
    assert "no_such_column" in str(bug.value)
    assert unreadable_file(bug.value, files) is None
