"""Hostile or unusual Arrow bodies: refused with a 4xx, never a 500, never a memory blow-up."""

from __future__ import annotations

import gzip
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from core.codes import Refusal
from ingest import arrow_body
from ingest.body import decode_content
from ingest.media import ARROW, decode_batch
from ingest.validate import Limits, validate_records
from tests.conftest import new_event

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MB = 1024 * 1024


def ipc(table: pa.Table, compression: str | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def decode(body: bytes, max_bytes: int = 32 * MB) -> Any:
    return decode_batch(
        ARROW, body, limits=Limits(), now=NOW, max_events=50_000, max_bytes=max_bytes
    )


def base(n: int) -> dict[str, pa.Array]:
    return {
        "event_id": pa.array([uuid.uuid4().bytes for _ in range(n)], pa.binary(16)),
        "occurred_at": pa.array([NOW] * n, pa.timestamp("us", tz="UTC")),
        "user_id": pa.array(["u"] * n),
        "event_type": pa.array(["t"] * n),
    }


def test_a_negative_declared_size_cannot_cancel_out_real_sizes() -> None:
    """Forge an 8-byte buffer declaring -2**60 uncompressed bytes next to a large real one."""
    n = 200
    cols = base(n)
    cols["properties"] = pa.array(['{"p":"' + "a" * 50_000 + '"}'] * n)  # 10 MB, compressible
    raw = bytearray(ipc(pa.table(cols), "zstd"))
    pos = 0
    while True:  # find the record batch message: [0xFFFFFFFF][int32 len][metadata][body]
        _, meta_len = struct.unpack_from("<Ii", raw, pos)
        message = pa.ipc.read_message(pa.py_buffer(bytes(raw[pos:])))
        if message.type == "record batch":
            break
        pos += 8 + meta_len + message.body.size
    meta_at, body_len = pos + 8, message.body.size
    meta = bytes(raw[meta_at : meta_at + meta_len])
    root = arrow_body._Table(meta, struct.unpack_from("<I", meta, 0)[0])
    struct.pack_into("<q", raw, meta_at + root._field(3), body_len + 8)  # bodyLength
    header = root.table(2)
    assert header is not None
    field = header._field(2)
    assert field is not None
    vector = field + struct.unpack_from("<I", meta, field)[0]
    # The first buffer (a validity bitmap Arrow never reads) now points at 8 forged bytes.
    struct.pack_into("<qq", raw, meta_at + vector + 4, body_len, 8)
    body_at = meta_at + meta_len
    raw[body_at + body_len : body_at + body_len] = struct.pack("<q", -(1 << 60))
    with pytest.raises(Refusal) as info:
        decode(bytes(raw), max_bytes=2 * MB)
    assert info.value.status == 400
    assert info.value.code == "invalid_arrow"


def test_a_dictionary_that_would_expand_past_the_limit_is_413() -> None:
    n = 50_000
    cols = base(n)
    cols["event_type"] = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int8)), pa.array(["x" * 10_000])
    )
    body = ipc(pa.table(cols), "zstd")
    assert len(body) < 2 * MB
    with pytest.raises(Refusal) as info:
        decode(body)
    assert (info.value.status, info.value.code) == (413, "body_too_large")


def test_string_views_are_measured_before_they_are_copied() -> None:
    n = 50_000
    big = b"y" * 10_000
    views = b"".join(struct.pack("<i4sii", len(big), big[:4], 0, 0) for _ in range(n))
    event_type = pa.Array.from_buffers(
        pa.string_view(), n, [None, pa.py_buffer(views), pa.py_buffer(big)]
    )
    cols = base(n)
    cols["event_type"] = event_type
    with pytest.raises(Refusal) as info:
        decode(ipc(pa.table(cols), "zstd"))
    assert (info.value.status, info.value.code) == (413, "body_too_large")


def test_small_string_views_and_uuid_extension_ids_are_accepted() -> None:
    n = 3
    ids = [uuid.uuid4() for _ in range(n)]
    cols = base(n)
    cols["event_id"] = pa.ExtensionArray.from_storage(
        pa.uuid(), pa.array([i.bytes for i in ids], pa.binary(16))
    )
    cols["user_id"] = pa.array(["a", "b", "c"], pa.string_view())
    batch = decode(ipc(pa.table(cols)))
    assert batch.accepted == 3
    assert batch.table.column("event_id").to_pylist() == [i.bytes for i in ids]
    assert batch.table.column("user_id").to_pylist() == ["a", "b", "c"]


@pytest.mark.parametrize(
    "properties",
    [
        pa.StructArray.from_arrays([pa.array([b"x"], pa.binary())], names=["b"]),
        pa.StructArray.from_arrays(
            [pa.array([2**62], pa.int64()).cast(pa.timestamp("s"))], names=["t"]
        ),
        pa.StructArray.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]),
        pa.StructArray.from_arrays(
            [pa.array([{"k": 1}], pa.map_(pa.string(), pa.int64()))], names=["m"]
        ),
    ],
    ids=["binary", "timestamp", "duplicate-names", "map"],
)
def test_struct_properties_with_non_json_fields_are_400(properties: pa.Array) -> None:
    cols = base(1)
    cols["properties"] = properties
    with pytest.raises(Refusal) as info:
        decode(ipc(pa.table(cols)))
    assert (info.value.status, info.value.code) == (400, "invalid_arrow_schema")


def test_duplicate_column_names_are_400() -> None:
    cols = base(1)
    table = pa.Table.from_arrays(
        [*cols.values(), pa.array(["again"])], names=[*cols.keys(), "user_id"]
    )
    with pytest.raises(Refusal) as info:
        decode(ipc(table))
    assert (info.value.status, info.value.code) == (400, "invalid_arrow_schema")


@pytest.mark.parametrize("unit", ["s", "ms"])
def test_coarse_timestamps_out_of_range_are_refused_not_wrapped(unit: str) -> None:
    cols = base(2)
    cols["occurred_at"] = pa.array(
        [2**62, 1_700_000_000 * (1 if unit == "s" else 1000)], pa.timestamp(unit)
    )
    batch = decode(ipc(pa.table(cols)))
    assert [(r.index, r.code) for r in batch.rejected] == [(0, "invalid_timestamp")]
    assert batch.table.column("occurred_at").to_pylist() == [
        datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    ]


def test_nanoseconds_are_floored() -> None:
    cols = base(1)
    cols["occurred_at"] = pa.array([1_700_000_000_123_456_789], pa.timestamp("ns"))
    batch = decode(ipc(pa.table(cols)))
    assert batch.table.column("occurred_at").to_pylist() == [
        datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    ]


def test_properties_text_is_stored_as_orjson_reencodes_it() -> None:
    """Numbers PostgreSQL's numeric cannot hold never reach COPY: the text is re-encoded."""
    events = [
        {k: v for k, v in new_event().items() if k != "properties"}
        | {"properties_json": '{"tiny": 1e-16384, "n": 1.50, "s": "x"}'}
    ]
    batch = validate_records(events, Limits(), NOW)
    assert batch.rejected == []
    assert orjson.loads(batch.table.column("properties")[0].as_py()) == {
        "tiny": 0.0,
        "n": 1.5,
        "s": "x",
    }


def test_thousands_of_gzip_members_are_refused_quickly() -> None:
    member = gzip.compress(b"")
    with pytest.raises(Refusal) as info:
        decode_content(member * 50_000, "gzip", 32 * MB)
    assert (info.value.status, info.value.code) == (400, "invalid_encoding")
    assert decode_content(member * 10 + gzip.compress(b"[1]"), "gzip", 100) == b"[1]"
