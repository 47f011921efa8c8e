"""Shared set-up of the analytics tests: the stored sample and an independent truth."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import pytest

from core.config import Settings
from pipeline.steps.write import stage_messages as stage
from storage.lake import Lake
from storage.writer import EventWriter, create_writer_pool
from tests import sample
from tests.conftest import new_event
from tests.storage.test_writer import batch

SAMPLE_TODAY = date(2025, 8, 31)  # the day after the sample's last event (UTC)

# Events with nested properties and a UTC-midnight edge, added to the sample.
EXTRA = [
    new_event(
        user_id="n1",
        event_type="purchase",
        occurred_at="2025-08-02T23:30:00-01:00",
        properties={"device": {"os": "iOS", "v": 17}, "country": "UA"},
    ),
    new_event(
        user_id="n2",
        event_type="purchase",
        occurred_at="2025-08-03T00:00:00Z",
        properties={"device": {"os": "Android"}, "country": "UA"},
    ),
    new_event(
        user_id="n1",
        event_type="app_open",
        occurred_at="2025-08-10T12:00:00Z",
        properties={"device": {"os": "iOS"}},
    ),
]


class Truth:
    """Independent answers: DuckDB SQL over the CSV rows plus the extra events."""

    def __init__(self, tmp: Path, extra: list[dict[str, Any]]) -> None:
        path = tmp / "truth.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["event_id", "occurred_at", "user_id", "event_type", "properties_json"])
            for r in sample.rows():
                w.writerow(
                    [
                        r["event_id"],
                        r["occurred_at"],
                        r["user_id"],
                        r["event_type"],
                        r["properties_json"],
                    ]
                )
            for e in extra:
                w.writerow(
                    [
                        e["event_id"],
                        e["occurred_at"],
                        str(e["user_id"]),
                        e["event_type"],
                        json.dumps(e["properties"]),
                    ]
                )
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        # timezone('UTC', ...) rather than a plain CAST: DuckDB pushes a CAST to DATE into the
        # CSV reader, which then takes the local date in front of the offset.
        self.con.execute(
            "CREATE TABLE ev AS SELECT user_id, event_type, properties_json AS props, "
            "CAST(timezone('UTC', occurred_at) AS DATE) AS day FROM read_csv($1, header = true, "
            "types = {'event_id': 'VARCHAR', 'occurred_at': 'TIMESTAMPTZ', 'user_id': 'VARCHAR', "
            "'event_type': 'VARCHAR', 'properties_json': 'VARCHAR'})",
            [str(path)],
        )

    @staticmethod
    def _where(segments: list[tuple[str, str]]) -> str:
        clauses = ["true"]
        for key, value in segments:
            v = value.replace("'", "''")
            if key == "event_type":
                clauses.append(f"event_type = '{v}'")
            else:
                path = "$." + key.removeprefix("properties.")
                clauses.append(f"json_extract_string(props, '{path}') = '{v}'")
        return " AND ".join(clauses)

    def dau(self, first: date, last: date, segments: list[tuple[str, str]] = ()) -> list[dict]:
        counts = dict(
            self.con.execute(
                f"SELECT day, count(DISTINCT user_id) FROM ev WHERE {self._where(list(segments))} "
                "GROUP BY day"
            ).fetchall()
        )
        return [
            {
                "date": (first + timedelta(days=i)).isoformat(),
                "unique_users": counts.get(first + timedelta(days=i), 0),
            }
            for i in range((last - first).days + 1)
        ]

    def top(
        self, first: date, last: date, limit: int, segments: list[tuple[str, str]] = ()
    ) -> list[dict]:
        rows = self.con.execute(
            f"SELECT event_type, count(*) AS n FROM ev WHERE day BETWEEN $1 AND $2 AND "
            f"{self._where(list(segments))} GROUP BY 1 ORDER BY n DESC, event_type LIMIT $3",
            [first, last, limit],
        ).fetchall()
        return [{"event_type": t, "count": n} for t, n in rows]

    def retention(
        self, start: date, windows: int, g: int, segments: list[tuple[str, str]] = ()
    ) -> tuple[int, list[int]]:
        where = self._where(list(segments))
        cohort = {
            u
            for (u,) in self.con.execute(
                f"SELECT user_id FROM ev WHERE {where} GROUP BY user_id "
                "HAVING min(day) >= $1 AND min(day) < $2",
                [start, start + timedelta(days=g)],
            ).fetchall()
        }
        active = []
        for k in range(windows):
            lo = start + timedelta(days=k * g)
            users = {
                u
                for (u,) in self.con.execute(
                    f"SELECT DISTINCT user_id FROM ev WHERE {where} AND day >= $1 AND day < $2",
                    [lo, lo + timedelta(days=g)],
                ).fetchall()
            }
            active.append(len(users & cohort))
        return len(cohort), active


@pytest.fixture
async def store(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> AsyncIterator[tuple[Settings, Lake]]:
    """The sample (plus EXTRA) stored hot, with a lake directory for the test."""
    lake_settings = settings.with_overrides(lake_dir=str(tmp_path / "lake"))
    pool = await create_writer_pool(settings.database_url, size=2)
    writer = EventWriter(pool, notify_channel="x", hot_days=40, today=lambda: SAMPLE_TODAY)
    events = sample.events()
    await asyncio.gather(
        *(writer.write(stage([batch(events[i : i + 1000])])) for i in range(0, len(events), 1000))
    )
    await writer.write(stage([batch(EXTRA)]))
    await pool.close()
    yield lake_settings, Lake(lake_settings.lake_dir)


@pytest.fixture
def truth(tmp_path: Path) -> Truth:
    return Truth(tmp_path, EXTRA)
