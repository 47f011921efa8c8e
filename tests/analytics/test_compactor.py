"""Compactor edge cases found in review: unknown commit outcome, text that looks like NULL."""

from __future__ import annotations

import hashlib
from datetime import date

import asyncpg
import pyarrow.parquet as pq

from core.config import Settings
from pipeline.steps.write import stage_messages as stage
from storage.compactor import Compactor
from storage.lake import Lake, LakeFile
from storage.writer import EventWriter, create_writer_pool
from tests.conftest import new_event
from tests.storage.test_writer import batch

TODAY = date(2025, 12, 20)
COLD = "2025-12-05T10:00:00Z"


async def store(settings: Settings, events: list[dict[str, object]]) -> None:
    pool = await create_writer_pool(settings.database_url, size=1)
    try:
        await EventWriter(pool, notify_channel="x", today=lambda: TODAY).write(
            stage([batch(events)])
        )
    finally:
        await pool.close()


async def test_text_that_csv_readers_take_for_null_survives(
    settings: Settings, db: asyncpg.Connection, tmp_path: object
) -> None:
    pairs = [("null", "NA"), ("N/A", "nan"), ("", "NULL")]
    events = [new_event(occurred_at=COLD, user_id=u or "x", event_type=t) for u, t in pairs]
    await store(settings, events)
    lake = Lake(str(tmp_path))
    report = await Compactor(
        settings.database_url, lake, hot_days=7, today=lambda: TODAY
    ).run_once()
    assert (report.rows, report.failed) == (3, [])
    (path,) = lake.files_on_disk(date(2025, 12, 5))
    # Recorded with its size and the SHA-256 of its bytes (for `events lake verify`).
    recorded = await db.fetch("SELECT path, bytes, sha256 FROM lake_files")
    assert [tuple(r) for r in recorded] == [
        (lake.relative(path), path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    ]
    rows = pq.read_table(path).select(["user_id", "event_type"]).to_pylist()
    assert sorted((r["user_id"], r["event_type"]) for r in rows) == sorted(
        (u or "x", t) for u, t in pairs
    )


class LostReply(Compactor):
    """The COMMIT reaches the server, then the connection breaks before the answer."""

    async def _publish(self, conn: asyncpg.Connection, day: date, files: list[LakeFile]) -> None:
        await super()._publish(conn, day, files)
        raise ConnectionResetError("connection lost before CommandComplete")


async def test_files_are_kept_when_the_commit_outcome_is_unknown(
    settings: Settings, db: asyncpg.Connection, tmp_path: object
) -> None:
    await store(settings, [new_event(occurred_at=COLD) for _ in range(5)])
    lake = Lake(str(tmp_path))
    report = await LostReply(
        settings.database_url, lake, hot_days=7, today=lambda: TODAY
    ).run_once()
    assert report.failed == [date(2025, 12, 5)]
    listed = await db.fetch("SELECT path, rows FROM lake_files")
    assert [r["rows"] for r in listed] == [5]
    assert lake.absolute(listed[0]["path"]).exists()  # published, so never deleted
    assert await db.fetchval("SELECT count(*) FROM events") == 0
    again = await Compactor(settings.database_url, lake, hot_days=7, today=lambda: TODAY).run_once()
    assert (again.days, again.orphans_removed) == ([], 0)
    assert lake.absolute(listed[0]["path"]).exists()
