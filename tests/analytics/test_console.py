"""``events sql``: one view over lake + hot rows, read-only, and unable to write anything."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import uuid
from datetime import date
from pathlib import Path

import asyncpg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics.console import NotARead, check_read_only, open_session, print_result, snapshot
from core.config import Settings
from storage.compactor import Compactor
from storage.lake import Lake, LakeUnreadable
from tests import sample
from tests.analytics.conftest import EXTRA, SAMPLE_TODAY, Truth
from tests.services import EVENTS, service_env


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


# ---------------------------------------------------------------------------------------
# A console that cannot write: every form of write against a real lake, through the command.


@pytest.fixture
async def split(store: tuple[Settings, Lake]) -> tuple[Settings, Lake]:
    """The stored sample with days before 2025-08-25 moved to the lake by the compactor."""
    settings, lake = store
    report = await Compactor(
        settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY
    ).run_once()
    assert report.files > 0 and report.failed == []
    return settings, lake


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory holding an empty ``.tmp``: DuckDB's default temp directory."""
    cwd = tmp_path / "cwd"
    (cwd / ".tmp").mkdir(parents=True)
    return cwd


def fingerprint(lake: Lake, cwd: Path) -> dict[str, str]:
    """Every path under the lake and the working directory, files with their SHA-256."""
    found = {}
    for root in (lake.root, cwd):
        for p in sorted(root.rglob("*")):
            found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return found


def sql_cli(
    settings: Settings, cwd: Path, query: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EVENTS, "sql", query, *args],
        env=service_env(settings, EVENTS_LAKE_DIR=settings.lake_dir),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


REFUSED = "events sql runs only queries that read"
NO_FILES = "file system operations are disabled by configuration"

# (statement, exit status, what stderr says); {lake_file}, {lake} and {cwd} filled in.
WRITES = [
    # The attack that replaced a lake file through allowed_paths:
    (
        "COPY (SELECT 42 AS pwned) TO '{lake_file}' (FORMAT parquet, USE_TMP_FILE false)",
        2,
        "refused COPY",
    ),
    (
        "COPY (SELECT 42) TO '{lake}/events/date=2025-08-03/new.parquet' (FORMAT parquet)",
        2,
        "refused COPY",
    ),
    ("COPY (SELECT 42) TO '{cwd}/out.csv'", 2, "refused COPY"),
    ("COPY (SELECT 42) TO 'relative.csv'", 2, "refused COPY"),
    ("COPY (SELECT * FROM read_parquet('{lake_file}')) TO '{cwd}/copy.parquet'", 2, "refused COPY"),
    ("EXPORT DATABASE '{cwd}/export'", 2, "refused EXPORT"),
    ("ATTACH '{cwd}/new.duckdb' AS other", 2, "refused ATTACH"),
    ("ATTACH ':memory:' AS other", 2, "refused ATTACH"),
    ("INSTALL httpfs", 2, "refused INSTALL"),
    ("LOAD httpfs", 2, "refused LOAD"),
    ("UPDATE EXTENSIONS", 2, "refused UPDATE"),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", 2, "refused CREATE"),
    ("CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", 2, "refused CREATE"),
    ("SET temp_directory = '{cwd}/.tmp'", 2, "refused SET"),
    ("SET enable_external_access = true", 2, "refused SET"),
    ("RESET lock_configuration", 2, "refused RESET"),
    ("PRAGMA memory_limit = '1GB'", 2, "refused PRAGMA"),
    ("CREATE TABLE t AS SELECT * FROM events", 2, "refused CREATE"),
    ("DROP VIEW events", 2, "refused DROP"),
    ("CHECKPOINT", 2, "refused CHECKPOINT"),
    ("SELECT 1; COPY (SELECT 1) TO '{cwd}/second.csv'", 2, "refused COPY"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{cwd}/explained.csv'", 2, "refused EXPLAIN COPY"),
    # Queries, but of files other than the view: DuckDB itself can open no file.
    ("SELECT count(*) FROM read_parquet('{lake_file}')", 1, NO_FILES),
    ("SELECT * FROM read_csv('/etc/passwd')", 1, NO_FILES),
    ("SELECT * FROM read_text('{cwd}/.tmp/x')", 1, NO_FILES),
    ("SELECT * FROM glob('{lake}/**')", 1, NO_FILES),
]


async def test_no_write_runs_and_no_file_changes(
    split: tuple[Settings, Lake], workdir: Path
) -> None:
    settings, lake = split
    lake_file = next(lake.root.rglob("part-*.parquet"))
    before = fingerprint(lake, workdir)
    for template, status, says in WRITES:
        query = template.format(lake_file=lake_file, lake=lake.root, cwd=workdir)
        result = sql_cli(settings, workdir, query)
        assert (result.returncode, result.stdout) == (status, ""), (query, result.stderr)
        assert result.stderr.startswith("events sql: "), (query, result.stderr)
        assert says in result.stderr and "Traceback" not in result.stderr, (query, result.stderr)
        if status == 2:
            assert REFUSED in result.stderr
    assert fingerprint(lake, workdir) == before
    assert list((workdir / ".tmp").iterdir()) == []
    # ... and the same console still answers queries.
    result = sql_cli(settings, workdir, "SELECT count(*) AS n FROM events", "--format", "json")
    assert (result.returncode, json.loads(result.stdout)) == (0, [{"n": 5003}]), result.stderr


async def test_duckdb_itself_refuses_what_the_statement_check_would_let_through(
    split: tuple[Settings, Lake], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: the same writes run straight on the session, past ``check_read_only``."""
    settings, lake = split
    monkeypatch.chdir(workdir)
    lake_file = next(lake.root.rglob("part-*.parquet"))
    before = fingerprint(lake, workdir)
    files, hot = await snapshot(settings.database_url, lake)
    con = open_session(files, hot)
    try:
        for template, _, _ in WRITES:
            query = template.format(lake_file=lake_file, lake=lake.root, cwd=workdir)
            if query.startswith(("ATTACH ':memory:'", "CREATE TABLE", "DROP VIEW", "CHECKPOINT")):
                continue  # in memory only: the statement check is what refuses these
            with pytest.raises(duckdb.Error) as refused:
                con.execute(query).fetchall()
            assert "disabled" in str(refused.value) or "locked" in str(refused.value), query
    finally:
        con.close()
    assert fingerprint(lake, workdir) == before


async def test_a_query_too_big_for_memory_fails_instead_of_spilling(
    split: tuple[Settings, Lake], workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, lake = split
    big_sort = (
        "SELECT count(*) FROM (SELECT s FROM (SELECT md5(i::varchar) AS s FROM range(2000000) "
        "AS t(i)) ORDER BY s LIMIT 1000000 OFFSET 1)"
    )
    # Control: an ordinary DuckDB with the same memory limit spills into <cwd>/.tmp.
    control = tmp_path / "control"
    (control / ".tmp").mkdir(parents=True)
    monkeypatch.chdir(control)
    plain = duckdb.connect(":memory:", config={"memory_limit": "32MB", "threads": 1})
    try:
        assert plain.execute(big_sort).fetchall() == [(1000000,)]
        assert list((control / ".tmp").iterdir())  # it wrote temporary files there
    finally:
        plain.close()

    monkeypatch.chdir(workdir)
    files, hot = await snapshot(settings.database_url, lake)
    con = open_session(files, hot, memory_limit="32MB")
    try:
        with pytest.raises(duckdb.OutOfMemoryException, match="no temporary directory"):
            print_result(con, big_sort, "table", io.StringIO())
    finally:
        con.close()
    assert list((workdir / ".tmp").iterdir()) == []
    assert sorted(p.name for p in workdir.iterdir()) == [".tmp"]


async def test_queries_answer_over_lake_and_hot_rows(
    split: tuple[Settings, Lake], workdir: Path, truth: Truth
) -> None:
    settings, _ = split
    query = "SELECT event_type, count(*) AS count FROM events GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5"
    result = sql_cli(settings, workdir, query, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == truth.top(date(2025, 1, 1), date(2025, 12, 31), 5)
    # Days on both sides of the split (the lake ends with 2025-08-24).
    query = (
        "SELECT CAST(timezone('UTC', occurred_at) AS DATE) AS day, count(DISTINCT user_id) AS u "
        "FROM events WHERE occurred_at >= TIMESTAMPTZ '2025-08-22 00:00:00+00' "
        "AND occurred_at < TIMESTAMPTZ '2025-08-28 00:00:00+00' GROUP BY 1 ORDER BY 1"
    )
    result = sql_cli(settings, workdir, query, "--format", "csv")
    assert result.returncode == 0, result.stderr
    expected = [
        f"{d['date']},{d['unique_users']}" for d in truth.dau(date(2025, 8, 22), date(2025, 8, 27))
    ]
    assert result.stdout.splitlines() == ['"day","u"', *expected]
    for allowed in ("DESCRIBE events", "SHOW TABLES", "EXPLAIN SELECT count(*) FROM events"):
        assert sql_cli(settings, workdir, allowed).returncode == 0, allowed
    assert sorted(p.name for p in workdir.iterdir()) == [".tmp"]


async def test_the_lake_is_scanned_with_projection_and_filter_pushdown(
    split: tuple[Settings, Lake],
) -> None:
    settings, lake = split
    files, hot = await snapshot(settings.database_url, lake)
    con = open_session(files, hot)
    try:
        plan = con.execute(
            "EXPLAIN SELECT user_id FROM events WHERE event_type = 'purchase'"
        ).fetchall()[0][1]
    finally:
        con.close()
    arrow_scans = [part for part in plan.split("PYTHON_ARROW_SCAN")[1:]]
    assert len(arrow_scans) == 2  # the lake dataset and the hot rows
    assert all("event_type" in scan.split("╰")[0] for scan in arrow_scans)


async def test_a_missing_or_foreign_lake_file_is_a_clear_error(
    split: tuple[Settings, Lake], workdir: Path, db: asyncpg.Connection
) -> None:
    settings, lake = split
    first, second = sorted(lake.root.rglob("part-*.parquet"))[:2]
    # A Parquet file of another schema, recorded with its size: only its footer tells.
    pq.write_table(pa.table({"pwned": [42]}), first)
    await db.execute(
        "UPDATE lake_files SET bytes = $2 WHERE path = $1",
        lake.relative(first),
        first.stat().st_size,
    )
    files, hot = await snapshot(settings.database_url, lake)
    with pytest.raises(LakeUnreadable, match="foreign schema: pwned") as foreign:
        open_session(files, hot)
    assert foreign.value.path == str(first)

    second.unlink()
    result = sql_cli(settings, workdir, "SELECT count(*) FROM events")
    assert result.returncode == 1
    assert result.stderr == (
        f"events sql: lake file {second}: missing; `events lake verify` lists every problem\n"
    )


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1",
        "FROM events",
        "WITH a AS (SELECT 1) SELECT * FROM a",
        "VALUES (1)",
        "DESCRIBE events",
        "SUMMARIZE SELECT 1",
        "-- a comment\nEXPLAIN ANALYZE SELECT 1",
        "EXPLAIN (FORMAT json) SELECT 1",
        "SELECT 1; SELECT 2",
    ],
)
def test_queries_that_read_pass_the_statement_check(query: str) -> None:
    check_read_only(query)


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        ("", "no statement given"),
        ("-- only a comment", "no statement given"),
        ("COPY events TO 'x.parquet'", "refused COPY"),
        ("copy (select 1) to 'x.csv'", "refused COPY"),
        ("INSERT INTO t VALUES (1)", "refused INSERT"),
        ("CALL pragma_version()", "refused CALL"),
        ("/* c */ EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1", "refused EXPLAIN CREATE"),
        ("EXPLAIN (FORMAT json) COPY (SELECT 1) TO 'x'", "refused EXPLAIN COPY"),
        ("SELECT 1; DETACH memory", "refused DETACH"),
    ],
)
def test_everything_else_is_refused_by_the_statement_check(query: str, refused: str) -> None:
    with pytest.raises(NotARead, match=refused):
        check_read_only(query)
