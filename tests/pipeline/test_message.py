"""The Arrow IPC message contract."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from core.ids import uuid7
from ingest.validate import Limits, validate_records
from pipeline.message import (
    EVENT_SCHEMA,
    BatchMeta,
    MessageDecodeError,
    decode_message,
    encode_message,
)
from tests.conftest import new_event

NOW = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_round_trip_keeps_events_and_metadata() -> None:
    events = [new_event(user_id=i) for i in range(10)]
    table = validate_records(events, Limits(), NOW).table
    meta = BatchMeta(batch_id=uuid7(), received_at=NOW, key_id="key_abc", source="ndjson")
    decoded = decode_message(encode_message(table, meta))
    assert decoded.meta == meta
    assert decoded.table.schema == EVENT_SCHEMA
    assert decoded.table.equals(table)
    assert decoded.rows == 10


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"\xff" * 64],
    ids=["empty", "text", "binary"],
)
def test_garbage_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(MessageDecodeError):
        decode_message(body)


def test_wrong_schema_or_missing_metadata_is_a_decode_error() -> None:
    other = pa.table({"x": [1]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, other.schema.with_metadata({b"events.version": b"1"})) as w:
        w.write_table(other)
    with pytest.raises(MessageDecodeError, match="schema"):
        decode_message(bytes(sink.getvalue()))

    table = validate_records([new_event()], Limits(), NOW).table
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:  # no metadata at all
        w.write_table(table)
    with pytest.raises(MessageDecodeError, match="version"):
        decode_message(bytes(sink.getvalue()))


def test_uuid7_is_time_ordered_and_version_7() -> None:
    ids = [uuid7() for _ in range(1000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == 1000
    millis = [i.int >> 80 for i in ids]
    assert millis == sorted(millis)
