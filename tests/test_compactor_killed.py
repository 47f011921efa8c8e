"""The compactor SIGKILLed at random moments, over repeated runs: nothing lost or doubled
across the hot rows and the lake (issue 14). ``events compact`` runs as a real process on
cold days of the run's database; after every kill the event ids stored in PostgreSQL and in
the lake files ``lake_files`` records must be exactly the ids written, each once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow.parquet as pq

from core.config import Settings
from core.ids import uuid7
from ingest.validate import Limits, validate_records
from pipeline.message import BatchMeta, DecodedBatch
from pipeline.steps.write import stage_messages as stage
from storage.lake import Lake
from storage.writer import EventWriter, create_writer_pool
from tests.services import EVENTS, service_env

EVENTS_PER_DAY = 25_000
DAYS = 8
MIN_KILLS = 5
MAX_RUNS = 30
SEED = 20261201


def batch(events: list[dict[str, Any]]) -> DecodedBatch:
    now = datetime.now(UTC)
    validated = validate_records(events, Limits(), now)
    assert validated.rejected == []
    meta = BatchMeta(batch_id=uuid7(), received_at=now, key_id="key_test", source="json")
    return DecodedBatch(table=validated.table, meta=meta)


async def _store(settings: Settings, first_day: int = 0) -> set[str]:
    """EVENTS_PER_DAY events on each of DAYS days well before the hot window (from
    ``first_day`` days further back)."""
    start = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    ids: set[str] = set()
    pool = await create_writer_pool(settings.database_url, size=1)
    try:
        writer = EventWriter(pool, notify_channel="x", hot_days=settings.hot_days)
        for d in range(DAYS):
            day = start - timedelta(days=settings.hot_days + 3 + first_day + d)
            for chunk in range(0, EVENTS_PER_DAY, 5_000):
                events = [
                    {
                        "event_id": str(uuid.uuid4()),
                        "occurred_at": (day + timedelta(seconds=chunk + i)).isoformat(),
                        "user_id": f"u{(chunk + i) % 997}",
                        "event_type": ("view", "buy", "open")[i % 3],
                        "properties": {"i": chunk + i},
                    }
                    for i in range(5_000)
                ]
                ids |= {e["event_id"] for e in events}
                await writer.write(stage([batch(events)]))
    finally:
        await pool.close()
    return ids


async def _stored(db: asyncpg.Connection, lake: Lake) -> tuple[list[str], list[str]]:
    """The ids in the hot rows, and in the recorded lake files (orphans are not read)."""
    hot = [str(r[0]) for r in await db.fetch("SELECT event_id FROM events")]
    cold: list[str] = []
    for (path,) in await db.fetch("SELECT path FROM lake_files"):
        column = pq.read_table(lake.absolute(path), columns=["event_id"]).column("event_id")
        cold += [str(uuid.UUID(bytes=v)) for v in column.combine_chunks().storage.to_pylist()]
    return hot, cold


def _compact(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("a") as out:
        return subprocess.Popen([*EVENTS, "compact"], env=env, stdout=out, stderr=out)


async def test_the_compactor_killed_at_random_moments_loses_and_doubles_nothing(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    ids = await _store(settings)
    lake = Lake(str(tmp_path / "lake"))
    # Small files: a run writes many, so a kill can land between any two steps of a day.
    env = service_env(
        settings, EVENTS_LAKE_DIR=str(tmp_path / "lake"), EVENTS_COMPACT_FILE_ROWS="4000"
    )
    log = tmp_path / "compact.log"
    rng = random.Random(SEED)
    outcomes: list[dict[str, Any]] = []
    # Kill after a random moment up to `upper` seconds; `upper` adapts to the machine's speed
    # (longer while kills land before the process gets anywhere, shorter once runs finish), so
    # that kills land mid-way through the days on a fast machine and on a slow one.
    upper, moved = 1.5, 0
    while len(outcomes) < MAX_RUNS and not (
        sum(o["killed"] for o in outcomes) >= MIN_KILLS
        and any(o["killed"] and 0 < o["lake"] < len(ids) for o in outcomes)
    ):
        if moved == len(ids):
            # A fast machine moved everything already: more cold days to interrupt.
            ids |= await _store(settings, first_day=DAYS * (len(outcomes) + 1))
        proc = _compact(env, log)
        delay = rng.uniform(0.2, upper)
        started = time.monotonic()
        try:
            code = proc.wait(timeout=delay)
            killed = False
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            code = proc.wait()
            killed = True
        hot, cold = await _stored(db, lake)
        outcomes.append(
            {
                "killed": killed,
                "after_s": round(time.monotonic() - started, 2),
                "hot": len(hot),
                "lake": len(cold),
            }
        )
        # After every kill: each event exactly once, in the hot rows or the lake.
        assert len(hot) + len(cold) == len(ids), outcomes
        assert set(hot) | set(cold) == ids and not set(hot) & set(cold), outcomes
        if not killed:
            assert code == 0, log.read_text()[-3000:]
            upper = max(0.5, upper * 0.7)
        elif len(cold) == moved:
            upper *= 1.5  # killed before it moved anything: give the next one longer
        moved = len(cold)
    # Kills landed, and at least one mid-way: some days in the lake, others not yet.
    assert sum(o["killed"] for o in outcomes) >= MIN_KILLS, outcomes
    assert any(o["killed"] and 0 < o["lake"] < len(ids) for o in outcomes), outcomes
    # A last run to the end: every cold day in the lake, leftovers of killed runs removed.
    final = _compact(env, log)
    assert final.wait(timeout=300) == 0, log.read_text()[-3000:]
    hot, cold = await _stored(db, lake)
    assert hot == [] and sorted(cold) == sorted(ids)
    verify = subprocess.run(  # noqa: ASYNC221 - the event loop has nothing else to do
        [*EVENTS, "lake", "verify"], env=env, capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    print("COMPACTOR_KILLS", outcomes)
