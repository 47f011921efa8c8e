"""``events lake verify`` against a lake written by the real compactor."""

from __future__ import annotations

import shutil
import subprocess
from datetime import date
from pathlib import Path

import asyncpg
import orjson

from core.config import Settings
from pipeline.steps.write import stage_messages as stage
from storage.compactor import Compactor
from storage.lake import Lake
from storage.lake_verify import verify_lake
from storage.writer import EventWriter, create_writer_pool
from tests.conftest import new_event
from tests.services import EVENTS, service_env
from tests.storage.test_writer import batch

TODAY = date(2025, 12, 20)
DAYS = [date(2025, 12, d) for d in (1, 2, 3, 4)]


async def compacted_lake(settings: Settings, tmp_path: Path) -> tuple[Settings, Lake, list[Path]]:
    """Four cold days of events moved to a lake by the compactor: one file per day."""
    events = [
        new_event(occurred_at=f"{day.isoformat()}T{h:02d}:00:00Z", user_id=f"u{h}")
        for day in DAYS
        for h in range(10)
    ]
    pool = await create_writer_pool(settings.database_url, size=1)
    try:
        await EventWriter(pool, notify_channel="x", today=lambda: TODAY).write(
            stage([batch(events)])
        )
    finally:
        await pool.close()
    lake_settings = settings.with_overrides(lake_dir=str(tmp_path / "lake"))
    lake = Lake(lake_settings.lake_dir)
    report = await Compactor(
        settings.database_url, lake, hot_days=7, today=lambda: TODAY
    ).run_once()
    # Empty partitions of cold days that earlier tests left behind are compacted too.
    assert set(DAYS) <= set(report.days)
    assert (report.files, report.failed) == (4, [])
    files = [p for day in DAYS for p in lake.files_on_disk(day)]
    assert len(files) == 4
    return lake_settings, lake, files


def verify_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EVENTS, "lake", "verify", *args],
        env=service_env(settings, EVENTS_LAKE_DIR=settings.lake_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_an_intact_lake_verifies(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    lake_settings, lake, files = await compacted_lake(settings, tmp_path)
    result = verify_cli(lake_settings)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"lake {lake.root}: 4 recorded file(s), 4 intact (0 of them size only: recorded without "
        "a checksum), 0 missing, 0 changed, 0 unreadable; 0 unrecorded file(s)"
    ]
    # A file recorded before checksums existed (migration 0004) is checked by size only.
    await db.execute("UPDATE lake_files SET sha256 = NULL WHERE path = $1", lake.relative(files[0]))
    report = await verify_lake(lake_settings.database_url, lake)
    assert (report.ok, report.intact, report.size_only) == (True, 4, [str(files[0])])


async def test_missing_changed_and_unrecorded_files_are_reported(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    lake_settings, lake, files = await compacted_lake(settings, tmp_path)
    flipped, deleted, truncated, kept = files
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte: same size, another checksum
    flipped.write_bytes(bytes(data))
    deleted.unlink()
    truncated.write_bytes(truncated.read_bytes()[:-10])
    stray = kept.parent / "part-stray.parquet"
    shutil.copyfile(kept, stray)  # a valid Parquet file, but never published

    result = verify_cli(lake_settings)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    size = truncated.stat().st_size
    assert lines[:4] == [
        f"changed     {flipped}  (SHA-256 differs from the recorded one)",
        f"missing     {deleted}",
        f"changed     {truncated}  ({size} bytes, {size + 10} recorded)",
        f"unrecorded  {stray}",
    ]
    assert lines[4] == (
        f"lake {lake.root}: 4 recorded file(s), 1 intact (0 of them size only: recorded without "
        "a checksum), 1 missing, 2 changed, 0 unreadable; 1 unrecorded file(s)"
    )
    assert "compaction or import still running" in lines[5]

    as_json = verify_cli(lake_settings, "--json")
    assert as_json.returncode == 1
    doc = orjson.loads(as_json.stdout)
    assert (doc["ok"], doc["recorded"], doc["intact"]) == (False, 4, 1)
    assert [(p["kind"], p["path"]) for p in doc["problems"]] == [
        ("changed", str(flipped)),
        ("missing", str(deleted)),
        ("changed", str(truncated)),
        ("unrecorded", str(stray)),
    ]


async def test_verify_says_when_it_cannot_run(settings: Settings, tmp_path: Path) -> None:
    broken = settings.with_overrides(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere", lake_dir=str(tmp_path)
    )
    result = verify_cli(broken)
    assert result.returncode == 2
    assert result.stderr.startswith("events lake verify: cannot verify the lake:")
    assert "Traceback" not in result.stderr
