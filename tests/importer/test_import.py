"""``import_events`` against the real PostgreSQL and a real lake directory."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config import Settings
from importer.readers import InputError
from importer.run import Options, TooManyErrors, run_import
from storage.lake import read_stats
from tests import sample
from tests.conftest import running_worker, wait_for_rows

SAMPLE = sample.SAMPLE_CSV


@pytest.fixture
def lake_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.with_overrides(lake_dir=str(tmp_path / "lake"))


def stored(settings: Settings) -> dict[uuid.UUID, tuple[datetime, str, str, dict[str, Any]]]:
    """Every event in the lake, read back with DuckDB (not the service's code)."""
    files = [str(p) for p in Path(settings.lake_dir).rglob("*.parquet")]
    if not files:
        return {}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = con.execute(
        "SELECT event_id, occurred_at, user_id, event_type, properties FROM read_parquet($1)",
        [files],
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3], json.loads(r[4])) for r in rows}


async def test_sample_csv_imports_exactly_once(
    lake_settings: Settings, db: asyncpg.Connection
) -> None:
    first = await run_import(lake_settings, [str(SAMPLE)], Options(progress=False))
    assert (first.read, first.imported, first.duplicates, first.rejected) == (5000, 5000, 0, 0)
    # August 2025 is long before the hot window: everything went straight to the lake.
    assert stored(lake_settings) == sample.expected_rows()
    assert await db.fetchval("SELECT count(*) FROM event_ids") == 5000
    assert await db.fetchval("SELECT sum(rows) FROM lake_files") == 5000
    # Each file is recorded with its size and the SHA-256 of its bytes (for `events lake verify`).
    recorded = await db.fetch("SELECT path, bytes, sha256 FROM lake_files")
    assert {r["path"]: (r["bytes"], r["sha256"]) for r in recorded} == {
        p.relative_to(lake_settings.lake_dir).as_posix(): (
            p.stat().st_size,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in Path(lake_settings.lake_dir).rglob("*.parquet")
    }
    # Written by Lake.write: frequent keys get property columns (these two are in every row).
    for p in Path(lake_settings.lake_dir).rglob("*.parquet"):
        stats = read_stats(str(p))
        assert stats is not None and {"country", "session_id"} <= set(stats.properties)
    again = await run_import(lake_settings, [str(SAMPLE)], Options(progress=False))
    assert (again.read, again.imported, again.duplicates) == (5000, 0, 5000)
    assert await db.fetchval("SELECT sum(rows) FROM lake_files") == 5000


def write_events(path: Path, fmt: str) -> None:
    events = sample.events()
    if fmt == "ndjson":
        path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    else:
        table = pa.table(
            {
                "event_id": [e["event_id"] for e in events],
                "occurred_at": pa.array(
                    [datetime.fromisoformat(e["occurred_at"]) for e in events],
                    pa.timestamp("us", tz="UTC"),
                ),
                "user_id": pa.array([int(e["user_id"]) for e in events]),
                "event_type": [e["event_type"] for e in events],
                "properties_json": [json.dumps(e["properties"]) for e in events],
            }
        )
        pq.write_table(table, path, row_group_size=1500)


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
async def test_ndjson_and_parquet(lake_settings: Settings, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"events.{fmt}"
    write_events(path, fmt)
    summary = await run_import(
        lake_settings, [str(path)], Options(progress=False, chunk_rows=700, chunk_bytes=100_000)
    )
    assert (summary.read, summary.imported) == (5000, 5000)
    assert stored(lake_settings) == sample.expected_rows()


BROKEN = [
    # line 2: fine
    '6c5d2a57-1b42-4a0e-9f1e-111111111111,2025-08-01T10:00:00+03:00,7,login,"{""a"":1}"',
    # line 3: bad UUID
    'not-a-uuid,2025-08-01T10:00:00+03:00,7,login,"{}"',
    # line 4: unquoted JSON with commas: too many fields
    '6c5d2a57-1b42-4a0e-9f1e-222222222222,2025-08-01T10:00:00+03:00,7,login,{"a":1,"b":2}',
    # line 5: empty user_id
    '6c5d2a57-1b42-4a0e-9f1e-333333333333,2025-08-01T10:00:00+03:00,,login,"{}"',
    # line 6: bad timestamp
    '6c5d2a57-1b42-4a0e-9f1e-444444444444,2025-13-01T10:00:00Z,7,login,"{}"',
    # line 7: fine, properties column empty
    "6c5d2a57-1b42-4a0e-9f1e-555555555555,2025-08-02T10:00:00Z,8,logout,",
    # line 8: JSON that is not an object
    '6c5d2a57-1b42-4a0e-9f1e-666666666666,2025-08-02T10:00:00Z,8,logout,"[1,2]"',
]


def broken_csv(path: Path) -> Path:
    header = "occurred_at,event_id,user_id,event_type,properties_json"  # any column order
    text = header + "\r\n" + "\r\n".join(_swap(line) for line in BROKEN) + "\r\n"
    path.write_text(text, encoding="utf-8")
    return path


def _swap(line: str) -> str:
    """Put occurred_at first (the header's order) without touching the rest of the line."""
    first, second, rest = line.split(",", 2)
    return f"{second},{first},{rest}"


async def test_broken_rows_go_to_the_reject_file_with_their_line(
    lake_settings: Settings, tmp_path: Path
) -> None:
    path = broken_csv(tmp_path / "broken.csv")
    summary = await run_import(lake_settings, [str(path)], Options(progress=False))
    assert (summary.read, summary.imported, summary.rejected) == (7, 2, 5)
    assert set(stored(lake_settings)) == {
        uuid.UUID("6c5d2a57-1b42-4a0e-9f1e-111111111111"),
        uuid.UUID("6c5d2a57-1b42-4a0e-9f1e-555555555555"),
    }
    assert summary.rejects_path == str(path) + ".rejects.csv"
    text = Path(summary.rejects_path).read_text(encoding="utf-8")
    rejects = {int(r["line"]): (r["code"], r["field"]) for r in csv.DictReader(io.StringIO(text))}
    assert rejects == {
        3: ("invalid_uuid", "event_id"),
        4: ("malformed_row", ""),
        5: ("empty", "user_id"),
        6: ("invalid_timestamp", "occurred_at"),
        8: ("invalid_type", "properties_json"),
    }


async def test_max_errors_aborts(lake_settings: Settings, tmp_path: Path) -> None:
    path = broken_csv(tmp_path / "broken.csv")
    with pytest.raises(TooManyErrors):
        await run_import(lake_settings, [str(path)], Options(progress=False, max_errors=4))


async def test_directories_stdin_and_unknown_formats(
    lake_settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "history"
    folder.mkdir()
    write_events(folder / "a.ndjson", "ndjson")
    (folder / "notes.txt").write_text("ignored")
    summary = await run_import(lake_settings, [str(folder)], Options(progress=False))
    assert (summary.read, summary.imported, summary.files) == (
        5000,
        5000,
        [str(folder / "a.ndjson")],
    )
    with pytest.raises(InputError, match="format"):
        await run_import(lake_settings, [str(folder / "notes.txt")], Options(progress=False))
    with pytest.raises(InputError, match="cannot read"):
        await run_import(lake_settings, [str(tmp_path / "missing.csv")], Options(progress=False))


async def test_hot_days_go_to_postgres_with_their_rollups(
    lake_settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    today = datetime.now(UTC).replace(microsecond=0)
    rows = ["event_id,occurred_at,user_id,event_type,properties_json"]
    for i in range(40):
        at = today - timedelta(days=i % 10, hours=1)  # days 0-6 hot, 7-9 cold
        rows.append(f'{uuid.uuid4()},{at.isoformat()},u{i % 5},t{i % 3},"{{}}"')
    path = tmp_path / "recent.csv"
    path.write_text("\n".join(rows) + "\n")
    summary = await run_import(lake_settings, [str(path)], Options(progress=False))
    assert summary.imported == 40
    hot = await db.fetchval("SELECT count(*) FROM events")
    assert hot == 28 and len(stored(lake_settings)) == 12
    assert await db.fetchval("SELECT sum(events) FROM daily_event_counts") == 28
    assert await db.fetchval("SELECT count(*) FROM daily_users") == await db.fetchval(
        "SELECT count(DISTINCT (user_id, (occurred_at AT TIME ZONE 'UTC')::date)) FROM events"
    )


class Crash(Exception):
    pass


async def test_a_crash_between_chunks_then_resume(
    lake_settings: Settings, db: asyncpg.Connection
) -> None:
    def crash(step: str, chunk: int) -> None:
        if step == "stored" and chunk == 2:
            raise Crash

    small = {"chunk_bytes": 100_000, "progress": False}
    with pytest.raises(Crash):
        await run_import(lake_settings, [str(SAMPLE)], Options(fault=crash, **small))
    committed = await db.fetchval("SELECT count(*) FROM import_chunks")
    assert committed == 3
    partial = await db.fetchval("SELECT sum(rows) FROM lake_files")
    assert 0 < partial < 5000
    resumed = await run_import(lake_settings, [str(SAMPLE)], Options(resume=True, **small))
    assert resumed.resumed_chunks == 3
    assert resumed.read == 5000 - await db.fetchval(
        "SELECT sum(records) FROM import_chunks WHERE chunk < 3"
    )
    assert resumed.duplicates == 0
    assert stored(lake_settings) == sample.expected_rows()


def _cli(settings: Settings, *args: str, **kw: Any) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "EVENTS_LAKE_DIR": settings.lake_dir,
        "EVENTS_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "importer.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


async def test_kill_9_mid_import_then_resume_gives_the_exact_count(
    lake_settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    big = tmp_path / "big.csv"
    rows = sample.rows()
    with big.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(["event_id", "occurred_at", "user_id", "event_type", "properties_json"])
        for k in range(8):  # 40,000 distinct events
            for r in rows:
                w.writerow(
                    [
                        str(uuid.uuid5(uuid.UUID(r["event_id"]), str(k))),
                        r["occurred_at"],
                        r["user_id"],
                        r["event_type"],
                        r["properties_json"],
                    ]
                )
    proc = _cli(lake_settings, str(big), "--chunk-mb", "1", "--no-progress")
    for _ in range(3000):
        if await db.fetchval("SELECT count(*) FROM import_chunks") >= 2 or proc.poll() is not None:
            break
        await asyncio.sleep(0.005)
    assert proc.poll() is None, "the import finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = await db.fetchval("SELECT coalesce(sum(rows), 0) FROM lake_files")
    assert before < 40_000
    resumed = _cli(lake_settings, str(big), "--chunk-mb", "1", "--no-progress", "--resume")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "resumed after" in err
    assert await db.fetchval("SELECT sum(rows) FROM lake_files") == 40_000
    assert await db.fetchval("SELECT count(*) FROM event_ids") == 40_000
    assert len(stored(lake_settings)) == 40_000


async def test_cli_exit_statuses(lake_settings: Settings, tmp_path: Path) -> None:
    path = broken_csv(tmp_path / "broken.csv")
    ok = _cli(lake_settings, str(path), "--no-progress")
    _, err = ok.communicate(timeout=60)
    assert ok.returncode == 0, err
    assert "imported 2" in err and "rejected 5" in err
    aborted = _cli(lake_settings, str(path), "--max-errors", "1", "--no-progress")
    _, err = aborted.communicate(timeout=60)
    assert aborted.returncode == 2 and "max-errors" in err
    down = lake_settings.with_overrides(
        database_url="postgresql://postgres:hunter2@127.0.0.1:1/events"
    )
    failed = _cli(down, str(path), "--no-progress")
    _, err = failed.communicate(timeout=60)
    assert failed.returncode == 1
    assert "cannot reach the database" in err and "hunter2" not in err


async def test_stdin_with_format(lake_settings: Settings) -> None:
    proc = _cli(lake_settings, "-", "--format", "csv", "--no-progress", stdin=subprocess.PIPE)
    _, err = proc.communicate(SAMPLE.read_text(encoding="utf-8"), timeout=60)
    assert proc.returncode == 0, err
    assert "imported 5000" in err
    assert len(stored(lake_settings)) == 5000


async def test_via_queue(lake_settings: Settings, db: asyncpg.Connection) -> None:
    options = Options(progress=False)
    async with running_worker(lake_settings.with_overrides(hot_days=10_000)):
        summary = await run_import(lake_settings, [str(SAMPLE)], options, via_queue=True)
        assert (summary.read, summary.imported, summary.duplicates) == (5000, 5000, 0)
        assert await wait_for_rows(db, 5000) == 5000
        again = await run_import(lake_settings, [str(SAMPLE)], options, via_queue=True)
        assert (again.imported, again.duplicates) == (0, 5000)
    assert await db.fetchval("SELECT count(*) FROM events") == 5000


def test_line_numbers_count_the_header_and_blank_lines() -> None:
    from importer.readers import csv_chunks

    text = (
        b"event_id,occurred_at,user_id,event_type\r\n"
        b"a,2025-01-01T00:00:00Z,1,x\r\n\r\n"
        b'b,2025-01-01T00:00:00Z,2,"multi\nline"\r\n'
        b"c,2025-01-01T00:00:00Z,3\r\n"
        b"d,2025-01-01T00:00:00Z,4,y\r\n"
    )
    chunks = list(csv_chunks(io.BytesIO(text), chunk_bytes=30))
    ids = [i for c in chunks for i in c.table.column("event_id").to_pylist()]
    lines = [int(x) for c in chunks for x in c.lines]
    assert ids == ["a", "b", "d"]
    assert lines == [2, 4, 6]  # records: a=2, blank=3, b=4, c=5 (refused), d=6
    assert [r[0] for c in chunks for r in c.refused] == [5]
    assert chunks[-1].resume_at == len(text)
