"""The message contract: one accepted request = one Arrow IPC stream on the queue.

Body: an Arrow IPC *stream* whose schema is ``EVENT_SCHEMA`` and whose schema metadata
carries the ingest metadata (``events.*`` keys below). AMQP properties repeat what a
consumer needs without opening the body: ``content_type``, ``type`` (contract version),
``message_id`` (= batch id), ``timestamp`` and the ``x-events``/``x-key-id`` headers.
Every event in a message has already passed validation at the edge.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from core.errors import TerminalError
from storage.staging import Batch

CONTENT_TYPE = "application/vnd.apache.arrow.stream"
MESSAGE_TYPE = "events.batch.v1"

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.binary(16), nullable=False),  # UUID bytes, big-endian
        pa.field("occurred_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("properties", pa.string(), nullable=False),  # JSON object text
    ]
)

_META_VERSION = b"events.version"
_META_BATCH_ID = b"events.batch_id"
_META_RECEIVED_AT = b"events.received_at_us"
_META_KEY_ID = b"events.key_id"
_META_SOURCE = b"events.source"


class MessageDecodeError(TerminalError):
    """A queue message that is not a valid batch; it belongs in the dead-letter queue."""


@dataclass(frozen=True, slots=True)
class BatchMeta:
    """What the edge knows about a batch besides its events."""

    batch_id: uuid.UUID
    received_at: datetime
    key_id: str
    source: str  # json | ndjson | arrow


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A message body turned back into its events and metadata."""

    table: pa.Table
    meta: BatchMeta

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    def staging(self) -> Batch:
        """The batch as the staging contract (``storage/staging.py``) takes it."""
        return Batch(self.table, self.meta.batch_id, self.meta.key_id, self.meta.received_at)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _received_at_us(value: datetime) -> int:
    delta = value.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_message(table: pa.Table, meta: BatchMeta) -> bytes:
    """Serialise validated events (``EVENT_SCHEMA``) and their metadata as an IPC stream."""
    metadata = {
        _META_VERSION: b"1",
        _META_BATCH_ID: str(meta.batch_id).encode(),
        _META_RECEIVED_AT: str(_received_at_us(meta.received_at)).encode(),
        _META_KEY_ID: meta.key_id.encode(),
        _META_SOURCE: meta.source.encode(),
    }
    schema = EVENT_SCHEMA.with_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table.replace_schema_metadata(metadata).cast(schema))
    return bytes(sink.getvalue())


def amqp_headers(meta: BatchMeta, rows: int) -> dict[str, Any]:
    """Headers that describe a message without decoding it."""
    return {"x-events": rows, "x-key-id": meta.key_id, "x-source": meta.source}


def decode_message(body: bytes) -> DecodedBatch:
    """Parse and check a message body; anything unexpected is a ``MessageDecodeError``."""
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(body))
        table = reader.read_all()
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as ex:
        raise MessageDecodeError(f"not an Arrow IPC stream: {ex}") from ex
    metadata = table.schema.metadata or {}
    if metadata.get(_META_VERSION) != b"1":
        raise MessageDecodeError(f"unsupported message version {metadata.get(_META_VERSION)!r}")
    if not table.schema.remove_metadata().equals(EVENT_SCHEMA):
        raise MessageDecodeError(f"unexpected schema: {table.schema.remove_metadata()}")
    try:
        meta = BatchMeta(
            batch_id=uuid.UUID(metadata[_META_BATCH_ID].decode()),
            received_at=_EPOCH + timedelta(microseconds=int(metadata[_META_RECEIVED_AT])),
            key_id=metadata[_META_KEY_ID].decode(),
            source=metadata.get(_META_SOURCE, b"").decode(),
        )
    except (KeyError, ValueError, UnicodeDecodeError, OverflowError) as ex:
        raise MessageDecodeError(f"bad message metadata: {ex!r}") from ex
    if table.num_rows and any(table.column(i).null_count for i in range(table.num_columns)):
        raise MessageDecodeError("null values in a non-nullable column")
    return DecodedBatch(table=table.replace_schema_metadata(None), meta=meta)
