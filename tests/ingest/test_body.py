"""Body limits: on the wire, while decompressing, and inside Arrow IPC compression."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator

import pyarrow as pa
import pytest
import zstandard

from core.codes import Refusal
from ingest.arrow_body import read_arrow
from ingest.body import decode_content, read_body


async def _stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_content_length_over_the_limit_is_refused_before_reading() -> None:
    read = []

    async def stream() -> AsyncIterator[bytes]:
        read.append(True)
        yield b"x"

    with pytest.raises(Refusal) as info:
        await read_body(stream(), 101, 100)
    assert info.value.status == 413
    assert read == []


async def test_body_over_the_limit_without_length_is_refused_while_reading() -> None:
    with pytest.raises(Refusal) as info:
        await read_body(_stream(b"a" * 60, b"b" * 60), None, 100)
    assert info.value.status == 413
    assert await read_body(_stream(b"a" * 60, b"b" * 40), None, 100) == b"a" * 60 + b"b" * 40


@pytest.mark.parametrize("coding", ["gzip", "zstd", "deflate"])
def test_decompression_round_trip(coding: str) -> None:
    raw = b'[{"x": 1}]' * 1000
    packed = {
        "gzip": gzip.compress,
        "zstd": zstandard.ZstdCompressor().compress,
        "deflate": zlib.compress,
    }[coding](raw)
    assert decode_content(packed, coding, len(raw)) == raw
    assert decode_content(packed, coding.upper(), len(raw)) == raw


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_compression_bombs_stop_at_the_limit(coding: str) -> None:
    bomb_size = 200 * 1024 * 1024
    zeros = b"\0" * (1024 * 1024)
    if coding == "gzip":
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        packed = b"".join(packer.compress(zeros) for _ in range(200)) + packer.flush()
    else:
        packed = zstandard.ZstdCompressor(level=3).compress(b"\0" * bomb_size)
    assert len(packed) < 1024 * 1024
    with pytest.raises(Refusal) as info:
        decode_content(packed, coding, 1024 * 1024)
    assert (info.value.status, info.value.code) == (413, "body_too_large")


def test_concatenated_gzip_members_are_all_read() -> None:
    packed = gzip.compress(b"[1,") + gzip.compress(b"2]")
    assert decode_content(packed, "gzip", 100) == b"[1,2]"


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", b"definitely not gzip"),
        ("gzip", gzip.compress(b"x" * 1000)[:-20]),
        ("zstd", b"not zstd either"),
    ],
    ids=["gzip-garbage", "gzip-truncated", "zstd-garbage"],
)
def test_invalid_compressed_bodies_are_400(coding: str, body: bytes) -> None:
    with pytest.raises(Refusal) as info:
        decode_content(body, coding, 1 << 20)
    assert (info.value.status, info.value.code) == (400, "invalid_encoding")


def test_unknown_encoding_is_415() -> None:
    with pytest.raises(Refusal) as info:
        decode_content(b"x", "br", 100)
    assert (info.value.status, info.value.code) == (415, "unsupported_encoding")


def _ipc(table: pa.Table, compression: str | None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_arrow_ipc_compression_is_accepted_within_the_limit(compression: str | None) -> None:
    table = pa.table({"a": pa.array(["x" * 50] * 1000), "b": pa.array(range(1000))})
    assert read_arrow(_ipc(table, compression), 1 << 20).equals(table)


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_arrow_ipc_compression_bomb_is_refused_before_decompressing(compression: str) -> None:
    table = pa.table({"a": pa.array([b"\0" * 1_000_000] * 64, pa.binary())})  # 64 MB
    body = _ipc(table, compression)
    assert len(body) < 2 * 1024 * 1024
    with pytest.raises(Refusal) as info:
        read_arrow(body, 8 * 1024 * 1024)
    assert (info.value.status, info.value.code) == (413, "body_too_large")


def test_arrow_file_format_is_refused_with_a_hint() -> None:
    sink = pa.BufferOutputStream()
    table = pa.table({"a": [1]})
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(Refusal) as info:
        read_arrow(bytes(sink.getvalue()), 1 << 20)
    assert info.value.code == "invalid_arrow"
    assert "stream format" in info.value.message
