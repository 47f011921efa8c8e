"""Retries and dead letters against the real servers.

- a backend terminated in the middle of its COPY: the micro-batch is retried, nothing lost
  or doubled;
- a poison message (a database trigger refuses it) among good ones: after
  EVENTS_MAX_ATTEMPTS it is isolated and dead-lettered with why and how often, the good
  ones are stored; ``events dlq`` lists and shows it, and replays it once the trigger is
  gone; a second replay still stores it once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import asyncpg

from core import metrics
from core.config import Settings
from core.ids import uuid7
from ingest.validate import Limits, validate_records
from pipeline.dead_letter_admin import DeadLetterQueue
from pipeline.message import BatchMeta, encode_message
from pipeline.publisher import Publisher
from pipeline.topology import Topology
from tests.conftest import (
    new_event,
    queue_depth,
    running_worker,
    wait_for_queue_depth,
    wait_for_rows,
)
from tests.pipeline.conftest import NOW, publish
from tests.services import service_env


async def test_backend_terminated_mid_copy_is_retried_without_loss_or_doubles(
    settings: Settings, db: asyncpg.Connection, publisher: Publisher, database_url: str
) -> None:
    fast = settings.with_overrides(retry_base_ms=20, retry_max_ms=200, batch_max_rows=20_000)
    batches = [[new_event(user_id=f"u{i}") for i in range(2000)] for _ in range(40)]
    expected = {e["event_id"] for b in batches for e in b}
    killer = await asyncpg.connect(database_url)
    killed_in_copy = 0
    retries_before = metrics.RETRIES.labels(reason="database_down")._value.get()
    try:
        async with running_worker(fast):
            for events in batches:
                await publish(publisher, events)
            deadline = time.monotonic() + 20
            # Watch the writers; terminate one while its COPY runs (a few times).
            while killed_in_copy < 3 and time.monotonic() < deadline:
                rows = await killer.fetch(
                    "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'events' "
                    "AND state = 'active' AND query ILIKE 'COPY%' AND pid <> pg_backend_pid()"
                )
                killed_in_copy += sum(1 for r in rows if r["ok"])
                if not rows:
                    await asyncio.sleep(0.001)
                    if await db.fetchval("SELECT count(*) FROM ingest_batches") == len(batches):
                        break
            assert await wait_for_rows(db, len(batches), table="ingest_batches", timeout=60) == 40
    finally:
        await killer.close()
    assert killed_in_copy >= 1, "no COPY was caught running; the test proved nothing"
    assert metrics.RETRIES.labels(reason="database_down")._value.get() > retries_before
    ids = [str(r["event_id"]) for r in await db.fetch("SELECT event_id FROM events")]
    assert len(ids) == len(expected)
    assert set(ids) == expected
    assert await queue_depth(settings, settings.dead_letter_queue_name) == 0
    print(
        "RELIABILITY",
        json.dumps(
            {
                "test": "backend_terminated_mid_copy",
                "events_sent": len(expected),
                "copies_terminated": killed_in_copy,
                "stored": len(ids),
                "lost": len(expected - set(ids)),
            }
        ),
    )


POISON_TRIGGER = """
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.event_type = 'poison' THEN
    RAISE EXCEPTION 'poison event %', NEW.event_id;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON events
  FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""


def events_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "dlq", *args],
        env=service_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_poison_message_is_dead_lettered_after_max_attempts_and_replayed_once(
    settings: Settings, db: asyncpg.Connection, publisher: Publisher
) -> None:
    worker_settings = settings.with_overrides(
        max_attempts=3, retry_base_ms=10, retry_max_ms=40, batch_max_age_ms=400
    )
    goods = [[new_event(user_id=f"good{j}") for _ in range(5)] for j in range(6)]
    poison = [new_event(event_type="poison")] + [new_event(user_id="victim") for _ in range(4)]
    await db.execute(POISON_TRIGGER)
    try:
        async with running_worker(worker_settings):
            metas = []
            for i, events in enumerate(goods):
                if i == 2:
                    poison_meta = await publish(publisher, poison)
                metas.append(await publish(publisher, events))
            assert await wait_for_rows(db, 30) == 30
            dlq = await wait_for_queue_depth(settings, settings.dead_letter_queue_name, 1, 30)
            assert dlq == 1
        # Every good message is stored; the poison message's events are not (it is one
        # message: its four good events wait with it in the DLQ).
        assert await db.fetchval("SELECT count(*) FROM events") == 30
        assert await db.fetchval("SELECT count(*) FROM events WHERE user_id = 'victim'") == 0

        listed = events_cli(settings, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        entries = json.loads(listed.stdout)
        assert entries["total"] == 1
        (entry,) = entries["dead_letters"]
        assert entry["id"] == str(poison_meta.batch_id)
        assert entry["reason"] == "write_failed"
        assert entry["write_attempts"] == 3
        assert entry["events"] == 5
        assert "poison event" in entry["error"]

        shown = events_cli(settings, "show", str(poison_meta.batch_id), "--events")
        assert shown.returncode == 0, shown.stderr
        details = json.loads(shown.stdout)
        assert sorted(e["event_id"] for e in details["events"]) == sorted(
            e["event_id"] for e in poison
        )
        assert details["headers"]["x-original-queue"] == settings.queue_name
        # list and show leave the message where it was.
        assert await queue_depth(settings, settings.dead_letter_queue_name) == 1
    finally:
        await db.execute("DROP TRIGGER refuse_poison ON events; DROP FUNCTION refuse_poison()")

    missing = events_cli(settings, "replay", "no-such-id")
    assert missing.returncode == 1
    replayed = events_cli(settings, "replay", "--all")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 " in replayed.stdout
    assert await queue_depth(settings, settings.dead_letter_queue_name) == 0
    async with running_worker(worker_settings):
        assert await wait_for_rows(db, 35) == 35
        # Replaying the same message again (a copy survived somewhere) changes nothing.
        await publisher.publish(
            encode_message(validate_records(poison, Limits(), NOW).table, poison_meta),
            message_id=str(poison_meta.batch_id),
            timestamp=NOW,
            headers={},
        )
        await asyncio.sleep(1.0)
        assert await wait_for_queue_depth(settings, settings.queue_name, 0) == 0
    stored = [str(r["event_id"]) for r in await db.fetch("SELECT event_id FROM events")]
    assert len(stored) == len(set(stored)) == 35
    assert {e["event_id"] for e in poison} <= set(stored)
    purge = events_cli(settings, "purge")
    assert purge.returncode == 2  # refuses without --yes
    assert events_cli(settings, "purge", "--yes").returncode == 0


async def test_dlq_replay_by_id_leaves_the_others(settings: Settings, publisher: Publisher) -> None:
    topology = Topology.from_settings(settings)
    ids = []
    for _ in range(3):
        meta = BatchMeta(batch_id=uuid7(), received_at=NOW, key_id="k", source="json")
        await publisher.publish(
            b"junk",
            message_id=str(meta.batch_id),
            timestamp=NOW,
            headers={"x-dead-letter-reason": "undecodable"},
            routing_key=topology.dead_letter_queue,
        )
        ids.append(str(meta.batch_id))
    dlq = DeadLetterQueue(settings.rabbitmq_url, topology)
    assert await dlq.replay([ids[1]]) == [ids[1]]
    total, entries = await dlq.entries()
    assert total == 2
    assert sorted(e.id for e in entries) == sorted([ids[0], ids[2]])
    assert await queue_depth(settings, settings.queue_name) == 1
    assert await dlq.purge() == 2
