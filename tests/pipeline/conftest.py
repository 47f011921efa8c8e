"""Publishing test batches straight to the run's queue (no API in between)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from core.config import Settings
from core.ids import uuid7
from ingest.validate import Limits, validate_records
from pipeline.message import BatchMeta, amqp_headers, encode_message
from pipeline.publisher import Publisher
from pipeline.topology import Topology

NOW = datetime.now(UTC)


def message(events: list[dict[str, object]]) -> tuple[bytes, BatchMeta]:
    """A queue message of ``events`` (validated as the API does) and its metadata."""
    table = validate_records(events, Limits(), NOW).table
    meta = BatchMeta(batch_id=uuid7(), received_at=NOW, key_id="key_test", source="json")
    return encode_message(table, meta), meta


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[Publisher]:
    p = Publisher(settings.rabbitmq_url, Topology.from_settings(settings))
    await p.start()
    yield p
    await p.close()


async def publish(publisher: Publisher, events: list[dict[str, object]]) -> BatchMeta:
    body, meta = message(events)
    await publisher.publish(
        body, message_id=str(meta.batch_id), timestamp=NOW, headers=amqp_headers(meta, len(events))
    )
    return meta
