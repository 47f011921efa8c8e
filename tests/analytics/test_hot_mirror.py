"""The in-process mirror of hot rows (analytics/hot_mirror.py) follows every snapshot exactly.

One app (so one mirror) answers segmented queries while events are written, committed
under its feet, compacted to the lake and sent late; every answer must equal plain SQL
over the events stored so far (``Truth``), never the mirror's earlier state.
"""

from __future__ import annotations

import json
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
from falcon import testing

from core.config import Settings
from pipeline.steps.write import stage_messages as stage
from service.app import create_app
from storage.compactor import Compactor
from storage.lake import Lake
from storage.writer import EventWriter, create_writer_pool
from tests.analytics.conftest import EXTRA, SAMPLE_TODAY, Truth
from tests.conftest import API_KEY, new_event
from tests.storage.test_writer import batch

RANGE = {"from": "2025-07-30", "to": "2025-08-31"}
SEGMENTED: list[dict[str, Any]] = [
    {**RANGE, "segment": "event_type:purchase"},
    {**RANGE, "segment": "properties.country:UA"},
    {**RANGE, "segment": ["event_type:view_item", "properties.device.os:iOS"]},
]


def _segments(params: dict[str, Any]) -> list[tuple[str, str]]:
    raw = params["segment"]
    return [tuple(s.split(":", 1)) for s in ([raw] if isinstance(raw, str) else raw)]  # type: ignore[misc]


def truth(directory: Path, events: list[dict[str, Any]]) -> Truth:
    directory.mkdir()
    return Truth(directory, events)


async def check(c: testing.ASGIConductor, truth: Truth) -> None:
    for params in SEGMENTED:
        result = await c.simulate_get("/stats/dau", params=params)
        assert result.status_code == 200, result.text
        first, last = date.fromisoformat(RANGE["from"]), date.fromisoformat(RANGE["to"])
        assert result.json["dau"] == truth.dau(first, last, _segments(params)), params
        # Counts, unlike distinct users, would show a row counted twice.
        result = await c.simulate_get("/stats/top-events", params=params)
        assert result.status_code == 200, result.text
        assert result.json["top_events"] == truth.top(first, last, 10, _segments(params))


async def write(settings: Settings, events: list[dict[str, Any]]) -> None:
    pool = await create_writer_pool(settings.database_url, size=1)
    writer = EventWriter(pool, notify_channel="x", hot_days=40, today=lambda: SAMPLE_TODAY)
    await writer.write(stage([batch(events)]))
    await pool.close()


async def test_the_mirror_follows_writes_commits_compaction_and_late_events(
    store: tuple[Settings, Lake], tmp_path: Path
) -> None:
    settings, lake = store
    added: list[dict[str, Any]] = []
    async with testing.ASGIConductor(create_app(settings), headers={"X-API-Key": API_KEY}) as c:
        await check(c, truth(tmp_path / "t0", EXTRA))  # the first fill

        # A batch written after the fill.
        later = [
            new_event(user_id=f"m{i}", event_type="purchase", occurred_at="2025-08-20T10:00:00Z")
            for i in range(5)
        ] + [new_event(user_id="m9", properties={"country": "UA", "device": {"os": "iOS"}})]
        await write(settings, later)
        added += later
        await check(c, truth(tmp_path / "t1", EXTRA + added))

        # A transaction in progress when a query takes its snapshot, committed before the next.
        conn = await asyncpg.connect(settings.database_url)
        pending = new_event(user_id="p1", event_type="purchase", occurred_at="2025-08-21T00:00:00Z")
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "INSERT INTO events (event_id, occurred_at, user_id, event_type, properties, "
            "received_at, batch_id) "
            "VALUES ($1, $2::text::timestamptz, $3, $4, $5::jsonb, now(), $6)",
            uuid.UUID(pending["event_id"]),
            pending["occurred_at"],
            pending["user_id"],
            pending["event_type"],
            json.dumps(pending["properties"]),
            uuid.uuid4(),
        )
        await check(c, truth(tmp_path / "t2", EXTRA + added))  # not visible yet
        await tx.commit()
        await conn.close()
        added.append(pending)
        await check(c, truth(tmp_path / "t3", EXTRA + added))

        # The compactor moves the older days out; nothing is counted twice or lost.
        report = await Compactor(
            settings.database_url, lake, hot_days=10, today=lambda: SAMPLE_TODAY
        ).run_once()
        assert report.rows > 0
        await check(c, truth(tmp_path / "t4", EXTRA + added))

        # A late event for a compacted day, then that day compacted again.
        late = new_event(user_id="late1", event_type="purchase", occurred_at="2025-08-02T12:00:00Z")
        await write(settings, [late])
        added.append(late)
        await check(c, truth(tmp_path / "t5", EXTRA + added))
        await Compactor(
            settings.database_url, lake, hot_days=10, today=lambda: SAMPLE_TODAY
        ).run_once()
        await check(c, truth(tmp_path / "t6", EXTRA + added))

        # A resent duplicate changes nothing.
        await write(settings, [dict(added[0], user_id="someone-else")])
        await check(c, truth(tmp_path / "t7", EXTRA + added))


async def test_rows_older_than_the_written_by_column_are_counted_once(
    store: tuple[Settings, Lake], tmp_path: Path
) -> None:
    settings, _ = store
    conn = await asyncpg.connect(settings.database_url)
    await conn.execute("UPDATE events SET written_by = NULL WHERE user_id < 'm'")
    await conn.close()
    async with testing.ASGIConductor(create_app(settings), headers={"X-API-Key": API_KEY}) as c:
        await check(c, truth(tmp_path / "t0", EXTRA))
        extra = [new_event(user_id="z1", event_type="purchase", occurred_at="2025-08-22T10:00:00Z")]
        await write(settings, extra)
        await check(c, truth(tmp_path / "t1", EXTRA + extra))


async def test_past_its_bound_the_mirror_steps_aside_and_answers_stay_right(
    store: tuple[Settings, Lake], tmp_path: Path
) -> None:
    settings, _ = store
    small = settings.with_overrides(hot_mirror_rows=100)
    async with testing.ASGIConductor(create_app(small), headers={"X-API-Key": API_KEY}) as c:
        await check(c, truth(tmp_path / "t0", EXTRA))
        extra = [new_event(user_id="z2", event_type="purchase", occurred_at="2025-08-23T10:00:00Z")]
        await write(settings, extra)
        await check(c, truth(tmp_path / "t1", EXTRA + extra))
