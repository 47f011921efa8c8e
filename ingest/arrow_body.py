"""Reading a client's Arrow IPC body without trusting its declared sizes.

IPC bodies may be compressed per buffer (LZ4/ZSTD, each buffer prefixed by its
uncompressed length). Arrow allocates that declared length before decompressing, so a
small body could ask for gigabytes. Before reading, every record-batch and dictionary
message is inspected (a few fields of its flatbuffer header, read below) and the body is
refused when the declared sizes add up to more than the decompressed-bytes limit.
"""

from __future__ import annotations

import struct

import pyarrow as pa

from core.codes import ErrorCode, Refusal

# Record-batch and dictionary messages in one body: each becomes a chunk with its own
# C++ objects, so a body of a hundred thousand one-row batches costs far more than its bytes.
MAX_MESSAGES = 10_000

# Flatbuffer field ids (format/Message.fbs): Message.header = 2;
# RecordBatch.buffers = 2, RecordBatch.compression = 3; DictionaryBatch.data = 1.
_MESSAGE_HEADER = 2
_BATCH_BUFFERS = 2
_BATCH_COMPRESSION = 3
_DICTIONARY_DATA = 1


class _Table:
    """Just enough of a flatbuffer table reader for the fields above."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable = vtable
        self.vtable_size = struct.unpack_from("<H", buf, vtable)[0]

    def _field(self, field_id: int) -> int | None:
        entry = 4 + 2 * field_id
        if entry >= self.vtable_size:
            return None
        offset: int = struct.unpack_from("<H", self.buf, self.vtable + entry)[0]
        return self.pos + offset if offset else None

    def table(self, field_id: int) -> _Table | None:
        at = self._field(field_id)
        if at is None:
            return None
        return _Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0])

    def structs(self, field_id: int, size: int) -> list[bytes]:
        at = self._field(field_id)
        if at is None:
            return []
        vec = at + struct.unpack_from("<I", self.buf, at)[0]
        count = struct.unpack_from("<I", self.buf, vec)[0]
        return [self.buf[vec + 4 + i * size : vec + 4 + (i + 1) * size] for i in range(count)]


def _declared_bytes(message: pa.ipc.Message) -> int:
    """Bytes the batch in ``message`` occupies once decompressed, as its header declares."""
    meta = message.metadata.to_pybytes()
    body = message.body
    root = _Table(meta, struct.unpack_from("<I", meta, 0)[0])
    header = root.table(_MESSAGE_HEADER)
    if header is None:
        return 0
    if message.type == "dictionary":
        header = header.table(_DICTIONARY_DATA)
        if header is None:
            return 0
    buffers = [struct.unpack("<qq", raw) for raw in header.structs(_BATCH_BUFFERS, 16)]
    if header.table(_BATCH_COMPRESSION) is None:
        return sum(length for _, length in buffers)
    total = 0
    for offset, length in buffers:
        if length < 8:
            continue
        if offset < 0 or offset + 8 > body.size:
            raise ValueError("buffer outside the message body")
        declared = struct.unpack("<q", body[offset : offset + 8].to_pybytes())[0]
        if declared < -1:
            # -1 means "stored uncompressed"; any other negative size is a forgery that
            # would cancel out real sizes in the sum.
            raise ValueError("negative uncompressed buffer size")
        total += (length - 8) if declared == -1 else declared
    return total


def read_arrow(body: bytes, max_bytes: int, max_events: int | None = None) -> pa.Table:
    """The table in an Arrow IPC *stream* body, refused if it would exceed ``max_bytes``
    (or hold more than ``max_events`` rows, checked before the data is validated)."""
    if body[:6] == b"ARROW1":
        raise Refusal(
            ErrorCode.INVALID_ARROW,
            "this is the Arrow IPC file format; send the stream "
            "format (application/vnd.apache.arrow.stream)",
        )
    buffer = pa.py_buffer(body)
    try:
        _check_declared_sizes(buffer, max_bytes)
        table = pa.ipc.open_stream(buffer).read_all()
        if max_events is not None and table.num_rows > max_events:
            raise Refusal(
                ErrorCode.TOO_MANY_EVENTS,
                f"{table.num_rows} events in one request; the limit is {max_events}",
                limit=max_events,
            )
        if table.nbytes > max_bytes:  # what was actually allocated, whatever was declared
            raise Refusal(
                ErrorCode.BODY_TOO_LARGE,
                f"the decoded Arrow data is larger than {max_bytes} bytes",
                limit=max_bytes,
            )
        table.validate(full=True)
    except (pa.ArrowException, ValueError, struct.error, IndexError, OSError) as ex:
        raise Refusal(
            ErrorCode.INVALID_ARROW, f"the body is not a valid Arrow IPC stream: {ex}"
        ) from ex
    return table


def _check_declared_sizes(buffer: pa.Buffer, max_bytes: int) -> None:
    reader = pa.ipc.MessageReader.open_stream(buffer)
    total = messages = 0
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            return
        if message.type in ("record batch", "dictionary"):
            messages += 1
            if messages > MAX_MESSAGES:
                raise Refusal(
                    ErrorCode.TOO_MANY_BATCHES,
                    f"more than {MAX_MESSAGES} record batches in one body; send fewer, larger "
                    "batches",
                    limit=MAX_MESSAGES,
                )
            total += _declared_bytes(message)
            if total > max_bytes:
                raise Refusal(
                    ErrorCode.BODY_TOO_LARGE,
                    f"the decompressed Arrow data is larger than {max_bytes} bytes",
                    limit=max_bytes,
                )
