"""``events sql``: one view over lake + hot rows, read-only."""

from __future__ import annotations

import io
import json
import uuid

import asyncpg
import duckdb
import pytest

from analytics.console import open_session, print_result, snapshot
from core.config import Settings
from storage.compactor import Compactor
from storage.lake import Lake
from tests import sample
from tests.analytics.conftest import EXTRA, SAMPLE_TODAY


async def test_view_covers_lake_and_hot_rows_once(
    store: tuple[Settings, Lake], db: asyncpg.Connection
) -> None:
    settings, lake = store
    await Compactor(settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY).run_once()
    assert 0 < await db.fetchval("SELECT count(*) FROM events") < 5003  # split
    files, hot = await snapshot(settings.database_url, lake)
    con = open_session(files, hot)
    try:
        ids = {row[0] for row in con.execute("SELECT event_id FROM events").fetchall()}
        expected = set(sample.expected_rows()) | {uuid.UUID(e["event_id"]) for e in EXTRA}
        assert ids == expected
        assert con.execute("SELECT count(*) FROM events").fetchall() == [(5003,)]
        out = io.StringIO()
        print_result(
            con,
            "SELECT event_type, count(*) AS n FROM events GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 2",
            "json",
            out,
        )
        top = json.loads(out.getvalue())
        assert [r["event_type"] for r in top] == ["app_open", "view_item"]
        out = io.StringIO()
        print_result(con, "SELECT 1 AS a, 'x' AS b", "csv", out)
        assert out.getvalue().splitlines() == ['"a","b"', '1,"x"']
    finally:
        con.close()


async def test_the_session_reaches_no_other_file(store: tuple[Settings, Lake]) -> None:
    settings, lake = store
    files, hot = await snapshot(settings.database_url, lake)
    con = open_session(files, hot)
    try:
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            con.execute("SELECT * FROM read_csv('/etc/passwd')")
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            con.execute(f"COPY (SELECT 1) TO '{lake.root}/events/x.csv'")
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()
