"""``ANALYTICS_DATABASE_URL``: the hot-side reads of ``/stats`` from the cluster's standby
(issue 14). The answers equal hand-counted figures once the standby has replayed the
writes; a read the standby cancels or cuts off for a recovery conflict is computed again."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from analytics.engine import driver_errors
from analytics.limits import Deadline, retried_on_recovery_conflict
from analytics.sources import snapshot
from storage.migrate import migrate
from tests.cluster.conftest import cluster_settings, on_database
from tests.conftest import API_KEY, RUN_ID, new_event
from tests.services import free_port, start_api, start_worker, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


async def test_stats_from_the_standby_equal_hand_counted_figures(
    up: dict[str, str],
    tmp_path: Path,
) -> None:
    settings = cluster_settings(up, "standby")
    await migrate(settings.database_url)
    standby = on_database(up["ANALYTICS_DATABASE_URL"], f"events_standby_{RUN_ID}")
    port = free_port()
    api = start_api(settings, tmp_path / "api.log", port, workers=1, ANALYTICS_DATABASE_URL=standby)
    worker = start_worker(settings, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    day = (datetime.now(UTC) - timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    # Day 1: users a, b, c (a twice); day 2: users a, d. Types: open x4, buy x2.
    events = [
        new_event(user_id="a", event_type="open", occurred_at=day.isoformat()),
        new_event(
            user_id="a", event_type="buy", occurred_at=(day + timedelta(hours=1)).isoformat()
        ),
        new_event(user_id="b", event_type="open", occurred_at=day.isoformat()),
        new_event(user_id="c", event_type="open", occurred_at=day.isoformat()),
        new_event(user_id="a", event_type="buy", occurred_at=(day + timedelta(days=1)).isoformat()),
        new_event(
            user_id="d", event_type="open", occurred_at=(day + timedelta(days=1)).isoformat()
        ),
    ]
    first, second = day.date().isoformat(), (day + timedelta(days=1)).date().isoformat()
    try:
        await wait_ready(base, timeout=60)
        async with httpx.AsyncClient(
            base_url=base, headers={"X-API-Key": API_KEY}, timeout=30
        ) as http:
            sent = await http.post("/events?wait=true", content=orjson.dumps(events))
            assert sent.status_code == 200 and sent.json()["inserted"] == 6, sent.text
            params = {"from": first, "to": second}
            deadline = time.monotonic() + 30
            while (
                True
            ):  # until the standby has replayed the commit (synchronous: flushed, not yet applied)
                dau = (await http.get("/stats/dau", params=params)).json()
                if [d["unique_users"] for d in dau["dau"]] == [3, 2] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            top = (await http.get("/stats/top-events", params=params)).json()
            buyers = (
                await http.get("/stats/dau", params={**params, "segment": "event_type:buy"})
            ).json()
    finally:
        codes = [api.stop(), worker.stop()]
    assert [(d["date"], d["unique_users"]) for d in dau["dau"]] == [(first, 3), (second, 2)]
    assert [(t["event_type"], t["count"]) for t in top["top_events"]] == [("open", 4), ("buy", 2)]
    assert [d["unique_users"] for d in buyers["dau"]] == [1, 1]
    assert codes == [0, 0]
    log = (tmp_path / "api.log").read_text()
    assert "Traceback" not in log
    # The reads went to the standby: it served the API's connections.
    conn = await asyncpg.connect(standby)
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
    finally:
        await conn.close()


async def test_a_read_cut_off_by_recovery_is_retried(up: dict[str, str]) -> None:
    settings = cluster_settings(up, "conflict")
    await migrate(settings.database_url)  # the events table the read's snapshot locks
    standby_url = on_database(up["ANALYTICS_DATABASE_URL"], f"events_conflict_{RUN_ID}")
    p = await asyncpg.connect(settings.database_url)
    s = await asyncpg.connect(standby_url)
    try:
        # Replay cancels a conflicting read at once (no delay, no feedback to the primary).
        await s.execute("ALTER SYSTEM SET max_standby_streaming_delay = 0")
        await s.execute("ALTER SYSTEM SET hot_standby_feedback = off")
        await s.execute("SELECT pg_reload_conf()")
        await p.execute("DROP TABLE IF EXISTS conflict_t")
        await p.execute("CREATE TABLE conflict_t AS SELECT generate_series(1, 10000) AS i")
        for _ in range(100):
            if await s.fetchval("SELECT to_regclass('conflict_t') IS NOT NULL"):
                break
            await asyncio.sleep(0.1)
    finally:
        await s.close()
    pool = await asyncpg.create_pool(standby_url, min_size=1, max_size=2)
    attempts: list[int] = []

    @retried_on_recovery_conflict
    async def count() -> int:
        # A read holding its snapshot while the primary vacuums the rows it sees away.
        with driver_errors():
            async with snapshot(pool, Deadline.after(30)) as conn:
                first = int(await conn.fetchval("SELECT count(*) FROM conflict_t"))
                attempts.append(first)
                if len(attempts) == 1:
                    await p.execute("DELETE FROM conflict_t")
                    await p.execute("VACUUM conflict_t")
                    await asyncio.sleep(2.0)  # replayed: this session is cut off
                return int(await conn.fetchval("SELECT count(*) FROM conflict_t"))

    try:
        # Without the retry it fails as a lost connection (or a cancelled statement).
        answer = await count()
    finally:
        await pool.close()
        await p.execute("DROP TABLE IF EXISTS conflict_t")
        await p.close()
        s = await asyncpg.connect(standby_url)
        try:
            await s.execute("ALTER SYSTEM RESET max_standby_streaming_delay")
            await s.execute("ALTER SYSTEM RESET hot_standby_feedback")
            await s.execute("SELECT pg_reload_conf()")
        finally:
            await s.close()
    assert attempts[0] == 10000  # the first attempt saw the rows, then was cut off
    assert len(attempts) == 2 and answer == 0  # the second saw the table as it is now
