"""`events dlq list/show` read the DLQ without wearing its messages out (real RabbitMQ)."""

from __future__ import annotations

import aio_pika

from core.config import Settings
from pipeline.dead_letter_admin import DeadLetterQueue
from pipeline.publisher import Publisher
from pipeline.topology import DEAD_LETTER_DELIVERY_LIMIT, Topology
from tests.conftest import broker_queues, drain_queue, new_event
from tests.pipeline.conftest import NOW, message


async def _server_major(settings: Settings) -> int:
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        version = connection.transport.connection.server_properties["version"]
    finally:
        await connection.close()
    text = version.decode() if isinstance(version, bytes) else str(version)
    return int(text.split(".")[0])


async def test_reading_the_dlq_thirty_times_keeps_the_dead_letter_intact(
    settings: Settings, publisher: Publisher
) -> None:
    """RabbitMQ 4.x gives a quorum queue without x-delivery-limit a limit of 20, and the DLQ
    has nowhere to dead-letter to: a message read more often than that would be dropped.
    30 rounds of list + show are 60 returns, well past 20."""
    topology = Topology.from_settings(settings)
    events = [new_event(user_id=f"u{i}") for i in range(3)]
    body, meta = message(events)
    headers = {
        "x-dead-letter-reason": "refused_by_database",
        "x-error": "PostgreSQL 22P02: invalid input syntax for type json",
        "x-events": 3,
    }
    await publisher.publish(
        body,
        message_id=str(meta.batch_id),
        timestamp=NOW,
        headers=headers,
        routing_key=topology.dead_letter_queue,
    )
    dlq = DeadLetterQueue(settings.rabbitmq_url, topology)
    for _ in range(30):
        total, entries = await dlq.entries()
        assert total == 1
        assert [(e.id, e.reason, e.events) for e in entries] == [
            (str(meta.batch_id), "refused_by_database", 3)
        ]
        shown = await dlq.show(str(meta.batch_id), events=None)
        assert shown is not None
        assert [e["event_id"] for e in shown["events"]] == [e["event_id"] for e in events]

    declared = broker_queues("arguments")[topology.dead_letter_queue]["arguments"]
    assert ["x-delivery-limit", "signedint", DEAD_LETTER_DELIVERY_LIMIT] in declared
    letters = await drain_queue(settings, topology.dead_letter_queue)
    assert len(letters) == 1
    letter = letters[0]
    assert letter.body == body
    assert letter.message_id == str(meta.batch_id)
    assert {k: letter.headers[k] for k in headers} == headers
    if await _server_major(settings) < 4:
        # Measured on 3.10: every return counts, the explicit nack as well. With a limit
        # of 20 (4.x's default) the dead letter would have been gone after the 11th round.
        assert letter.headers["x-delivery-count"] == 60


async def test_the_dlq_of_a_classic_topology_has_no_delivery_limit(settings: Settings) -> None:
    """Classic queues refuse x-delivery-limit (PRECONDITION_FAILED on 3.10 too)."""
    classic = Topology.from_settings(settings.with_overrides(queue_type="classic"))
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        await classic.declare(connection)
    finally:
        await connection.close()
    declared = broker_queues("arguments")[classic.dead_letter_queue]["arguments"]
    assert declared == [["x-queue-type", "longstr", "classic"]]
