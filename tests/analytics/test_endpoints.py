"""The analytics endpoints against an independent computation, hot, cold and split.

The expected answers are computed by plain SQL in DuckDB straight over the sample CSV (and
the extra events a test adds), never by the service's own code.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import pytest
from falcon import testing

from core.config import Settings
from pipeline.steps.write import stage_messages as stage
from service.app import create_app
from storage.compactor import Compactor
from storage.lake import Lake
from storage.writer import EventWriter, create_writer_pool
from tests import sample
from tests.analytics.conftest import EXTRA, SAMPLE_TODAY, Truth
from tests.conftest import API_KEY, new_event
from tests.storage.test_writer import batch


async def get(settings: Settings, path: str, params: dict[str, Any] | None = None) -> Any:
    async with testing.ASGIConductor(create_app(settings), headers={"X-API-Key": API_KEY}) as c:
        return await c.simulate_get(path, params=params)


QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("/stats/dau", {"from": "2025-07-30", "to": "2025-08-31"}),
    (
        "/stats/dau",
        {"from_date": "2025-08-02", "to_date": "2025-08-03", "segment": "properties.device.os:iOS"},
    ),
    (
        "/stats/dau",
        {
            "from": "2025-08-01",
            "to": "2025-08-30",
            "segment": ["event_type:purchase", "properties.country:UA"],
        },
    ),
    ("/stats/top-events", {"from": "2025-08-01", "to": "2025-08-31", "limit": "3"}),
    ("/stats/top-events", {"from": "2025-08-05", "to": "2025-08-06", "properties.country": "PL"}),
    ("/stats/retention", {"start_date": "2025-08-01", "windows": "4", "granularity": "week"}),
    (
        "/stats/retention",
        {"start_date": "2025-08-02", "windows": "5", "segment": "properties.device.os=iOS"},
    ),
    (
        "/stats/retention",
        {
            "start_date": "2025-08-10",
            "windows": "6",
            "window_type": "day",
            "segment": "event_type:login",
        },
    ),
]


def expected(truth: Truth, path: str, params: dict[str, Any]) -> dict[str, Any]:
    segments: list[tuple[str, str]] = []
    raw = params.get("segment", [])
    for text in [raw] if isinstance(raw, str) else raw:
        key, _, value = text.replace("=", ":", 1).partition(":")
        segments.append((key, value))
    segments += [(k, v) for k, v in params.items() if k.startswith("properties.")]
    if path == "/stats/dau":
        first = date.fromisoformat(params.get("from") or params["from_date"])
        last = date.fromisoformat(params.get("to") or params["to_date"])
        return {"dau": truth.dau(first, last, segments)}
    if path == "/stats/top-events":
        first, last = date.fromisoformat(params["from"]), date.fromisoformat(params["to"])
        return {"top_events": truth.top(first, last, int(params.get("limit", 10)), segments)}
    start = date.fromisoformat(params["start_date"])
    g = 7 if params.get("granularity", params.get("window_type")) == "week" else 1
    cohort, active = truth.retention(start, int(params["windows"]), g, segments)
    return {"cohort_size": cohort, "active": active}


def observed(path: str, answer: dict[str, Any]) -> dict[str, Any]:
    if path == "/stats/dau":
        return {"dau": answer["dau"]}
    if path == "/stats/top-events":
        return {"top_events": answer["top_events"]}
    return {
        "cohort_size": answer["cohort_size"],
        "active": [w["active_users"] for w in answer["retention"]],
    }


async def check_all(settings: Settings, truth: Truth) -> None:
    for path, params in QUERIES:
        result = await get(settings, path, params)
        assert result.status_code == 200, (path, params, result.text)
        assert observed(path, result.json) == expected(truth, path, params), (path, params)


async def lake_rows(lake: Lake) -> int:
    files = [str(p) for p in lake.root.rglob("*.parquet")]
    if not files:
        return 0
    con = duckdb.connect()
    try:
        return int(con.execute("SELECT count(*) FROM read_parquet($1)", [files]).fetchall()[0][0])
    finally:
        con.close()


async def test_answers_match_hot_split_and_cold(
    store: tuple[Settings, Lake], truth: Truth, db: asyncpg.Connection
) -> None:
    settings, lake = store
    await check_all(settings, truth)  # all hot

    half = Compactor(settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY)
    report = await half.run_once()
    assert report.days[0] == date(2025, 7, 31) and report.days[-1] == date(2025, 8, 24)
    hot_left = await db.fetchval("SELECT count(*) FROM events")
    assert report.rows + hot_left == 5003
    assert await lake_rows(lake) == report.rows
    assert await db.fetchval("SELECT count(*) FROM daily_users WHERE day < '2025-08-25'") == 0
    await check_all(settings, truth)  # split between lake and PostgreSQL

    everything = Compactor(settings.database_url, lake, hot_days=1, today=lambda: date(2025, 9, 30))
    await everything.run_once()
    assert await db.fetchval("SELECT count(*) FROM events") == 0
    assert await lake_rows(lake) == 5003
    await check_all(settings, truth)  # all cold


async def test_late_events_for_a_compacted_day(
    store: tuple[Settings, Lake], db: asyncpg.Connection, tmp_path: Path
) -> None:
    settings, lake = store
    compactor = Compactor(settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY)
    await compactor.run_once()
    before = len(list(lake.day_dir(date(2025, 8, 5)).glob("*.parquet")))
    late = [
        new_event(
            user_id="late-1",
            event_type="purchase",
            occurred_at="2025-08-05T10:00:00Z",
            properties={"country": "UA"},
        ),
        new_event(user_id="1", event_type="purchase", occurred_at="2025-08-05T11:00:00Z"),
    ]
    pool = await create_writer_pool(settings.database_url, size=1)
    writer = EventWriter(pool, notify_channel="x", hot_days=7, today=lambda: SAMPLE_TODAY)
    result = await writer.write(stage([batch(late)]))
    # ... and a resend of an event that is already in the lake: still stored once.
    resent = await writer.write(stage([batch([sample.events()[0]])]))
    await pool.close()
    assert (result.inserted, resent.inserted, resent.duplicates) == (2, 0, 1)
    # The day is split: late rows wait in PostgreSQL's default partition.
    assert await db.fetchval("SELECT count(*) FROM events_default") == 2
    truth = Truth(tmp_path, [*EXTRA, *late])
    await check_all(settings, truth)
    report = await compactor.run_once()
    assert report.days == [date(2025, 8, 5)] and report.rows == 2
    assert len(list(lake.day_dir(date(2025, 8, 5)).glob("*.parquet"))) == before + 1
    await check_all(settings, truth)


class Crash(Exception):
    pass


async def test_a_compactor_killed_between_steps_then_rerun(
    store: tuple[Settings, Lake], truth: Truth, db: asyncpg.Connection
) -> None:
    settings, lake = store

    def fail(step: str, day: date) -> None:
        if step == "written" and day == date(2025, 8, 3):
            raise Crash

    broken = Compactor(
        settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY, fault=fail
    )
    with pytest.raises(Crash):
        await broken.run_once()
    # Files for 08-03 are on disk but unpublished: readers ignore them, rows are still hot.
    assert list(lake.day_dir(date(2025, 8, 3)).glob("part-*.parquet"))
    assert await db.fetchval("SELECT count(*) FROM lake_files WHERE day = '2025-08-03'") == 0
    await check_all(settings, truth)

    def fail_after_publish(step: str, day: date) -> None:
        if step == "published" and day == date(2025, 8, 3):
            raise Crash

    with pytest.raises(Crash):
        await Compactor(
            settings.database_url,
            lake,
            hot_days=7,
            today=lambda: SAMPLE_TODAY,
            fault=fail_after_publish,
        ).run_once()
    await check_all(settings, truth)

    report = await Compactor(
        settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY
    ).run_once()
    assert report.orphans_removed == 0  # the second run published 08-03; nothing left over
    assert await lake_rows(lake) + await db.fetchval("SELECT count(*) FROM events") == 5003
    await check_all(settings, truth)


async def test_orphans_of_a_crash_are_removed_by_the_next_run(
    store: tuple[Settings, Lake], truth: Truth, db: asyncpg.Connection
) -> None:
    settings, lake = store
    day = date(2025, 8, 3)

    def fail(step: str, d: date) -> None:
        if step == "written" and d == day:
            raise Crash

    with pytest.raises(Crash):
        await Compactor(
            settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY, fault=fail
        ).run_once()
    leftovers = list(lake.day_dir(day).glob("part-*.parquet"))
    assert leftovers
    report = await Compactor(
        settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY
    ).run_once()
    assert report.orphans_removed == len(leftovers)
    assert not any(p.exists() for p in leftovers)
    assert await lake_rows(lake) + await db.fetchval("SELECT count(*) FROM events") == 5003
    await check_all(settings, truth)


async def test_two_compactors_at_once_move_each_event_once(
    store: tuple[Settings, Lake], truth: Truth, db: asyncpg.Connection
) -> None:
    settings, lake = store
    a = Compactor(settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY)
    b = Compactor(settings.database_url, lake, hot_days=7, today=lambda: SAMPLE_TODAY)
    ra, rb = await asyncio.gather(a.run_once(), b.run_once())
    assert not set(ra.days) & set(rb.days)
    assert ra.rows + rb.rows == await lake_rows(lake)
    assert await lake_rows(lake) + await db.fetchval("SELECT count(*) FROM events") == 5003
    assert await db.fetchval("SELECT count(DISTINCT day) FROM lake_files") == len(ra.days) + len(
        rb.days
    )
    await check_all(settings, truth)


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/stats/dau", {"from": "2025-08-02", "to": "2025-08-01"}, "from"),
        ("/stats/dau", {"from": "2025-8-1", "to": "2025-08-01"}, "from"),
        ("/stats/dau", {"to": "2025-08-01"}, "from"),
        ("/stats/dau", {"from": "2024-01-01", "to": "2025-08-01"}, "to"),
        ("/stats/dau", {"from": "2025-08-01", "to": "2025-08-02", "segment": "country"}, "segment"),
        (
            "/stats/dau",
            {
                "from": "2025-08-01",
                "to": "2025-08-02",
                "segment": "properties.a;drop table events:x",
            },
            "segment",
        ),
        (
            "/stats/dau",
            {"from": "2025-08-01", "to": "2025-08-02", "segment": "user_id:1"},
            "segment",
        ),
        ("/stats/top-events", {"from": "2025-08-01", "to": "2025-08-02", "limit": "0"}, "limit"),
        ("/stats/top-events", {"from": "2025-08-01", "to": "2025-08-02", "limit": "x"}, "limit"),
        ("/stats/retention", {"start_date": "2025-08-01", "granularity": "month"}, "granularity"),
        ("/stats/retention", {"start_date": "2025-08-01", "windows": "0"}, "windows"),
        ("/stats/retention", {"windows": "2"}, "start_date"),
    ],
)
async def test_bad_parameters_are_400(
    store: tuple[Settings, Lake], path: str, params: dict[str, Any], parameter: str
) -> None:
    settings, _ = store
    result = await get(settings, path, params)
    assert result.status_code == 400, result.text
    assert result.json["error"]["code"] == "invalid_parameter"
    assert result.json["error"]["parameter"] == parameter


async def test_stats_need_the_api_key(store: tuple[Settings, Lake]) -> None:
    settings, _ = store
    async with testing.ASGIConductor(create_app(settings)) as c:
        result = await c.simulate_get(
            "/stats/dau", params={"from": "2025-08-01", "to": "2025-08-01"}
        )
    assert result.status_code == 401
