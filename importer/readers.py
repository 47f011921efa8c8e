"""Input files read in bounded chunks, with line numbers and a resume position.

- CSV: cut at record boundaries (a newline with an even number of quotes before it, so a
  quoted field may contain commas, quotes and line breaks), parsed by pyarrow into string
  columns. Malformed records (wrong number of fields) are refused with their line.
- NDJSON: cut at newlines; each line is one JSON value (a malformed line is refused alone).
- Parquet: read by record batches; the position is a row number.

``Chunk.resume_at`` is where the next chunk starts (a byte offset, or a row number for
Parquet): what ``--resume`` seeks to. Line numbers count the CSV header as line 1; for CSV
they are record numbers (the physical line when no field contains a line break).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REQUIRED = ("event_id", "occurred_at", "user_id", "event_type")
KNOWN = (*REQUIRED, "properties", "properties_json")


class InputError(ValueError):
    """The input cannot be read at all (no header, missing columns, not Parquet...)."""


@dataclass(slots=True)
class Chunk:
    number: int
    resume_at: int
    records: int  # records read, refused ones included
    next_line: int
    lines: np.ndarray  # line of each row of ``table`` / ``items``
    table: pa.Table | None = None
    items: list[Any] | None = None
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # (line, code, message)


def _csv_boundary(buffer: bytes, end: int) -> int:
    """The last position (after a newline, before ``end``) outside quotes; -1 if none."""
    pos = buffer.rfind(b"\n", 0, end)
    while pos != -1:
        if buffer.count(b'"', 0, pos) % 2 == 0:
            return pos + 1
        pos = buffer.rfind(b"\n", 0, pos)
    return -1


def read_csv_header(stream: IO[bytes]) -> tuple[bytes, list[str], int]:
    """The header line, its column names and the byte offset after it."""
    header = stream.readline()
    if not header.strip():
        raise InputError("the CSV file is empty or has no header line")
    names = [
        n.strip().strip('"').strip() for n in header.decode("utf-8-sig").rstrip("\r\n").split(",")
    ]
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise InputError(
            f"the CSV header lacks column(s) {', '.join(missing)} (found: {', '.join(names)})"
        )
    return header.rstrip(b"\r\n").removeprefix(b"\xef\xbb\xbf"), names, len(header)


def csv_chunks(
    stream: IO[bytes],
    *,
    chunk_bytes: int,
    start: int | None = None,
    first_line: int = 2,
    first_chunk: int = 0,
) -> Iterator[Chunk]:
    """CSV records in chunks of about ``chunk_bytes``; ``start`` resumes at a byte offset."""
    header, names, offset = read_csv_header(stream)
    if start is not None and start > offset:
        stream.seek(start)
        offset = start
    columns = [n for n in names if n in KNOWN]
    number, line = first_chunk, first_line
    for body, resume_at in _record_blocks(
        stream, chunk_bytes, offset, lambda b: _csv_boundary(b, len(b))
    ):
        chunk = _parse_csv(
            header, body, columns, number=number, first_line=line, resume_at=resume_at
        )
        line = chunk.next_line
        number += 1
        yield chunk


def _record_blocks(
    stream: IO[bytes], chunk_bytes: int, offset: int, boundary: Callable[[bytes], int]
) -> Iterator[tuple[bytes, int]]:
    """Blocks of whole records read ``chunk_bytes`` at a time, each with the byte offset
    just after it (where a resumed import starts). ``boundary`` gives the end of the last
    whole record in a buffer (0: none yet, one record is longer than a chunk: read on)."""
    buffer = b""
    eof = False
    while not eof:
        data = stream.read(chunk_bytes)
        eof = not data
        buffer += data
        if not buffer:
            return
        cut = len(buffer) if eof else boundary(buffer)
        if cut <= 0:
            continue
        body, buffer = buffer[:cut], buffer[cut:]
        offset += len(body)
        yield body, offset


def _line_boundary(buffer: bytes) -> int:
    return buffer.rfind(b"\n") + 1


def _parse_csv(
    header: bytes, body: bytes, columns: list[str], *, number: int, first_line: int, resume_at: int
) -> Chunk:
    invalid: list[tuple[int, str]] = []

    def on_invalid(row: Any) -> str:
        reason = f"{row.actual_columns} fields instead of {row.expected_columns}"
        invalid.append((row.number - 2, reason))
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(header + b"\n" + body),
        # One thread: only then does pyarrow know each malformed record's number.
        read_options=pacsv.ReadOptions(use_threads=False, block_size=len(body) + len(header) + 2),
        # Blank lines are kept (as rows of empty fields, dropped below) so numbering holds.
        parse_options=pacsv.ParseOptions(
            newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=on_invalid
        ),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns,
            column_types={c: pa.string() for c in columns},
            strings_can_be_null=False,
        ),
    )
    records = table.num_rows + len(invalid)
    skipped = np.zeros(records, dtype=bool)
    for index, _ in invalid:
        skipped[index] = True
    lines = (np.flatnonzero(~skipped) + first_line).astype(np.int64)
    refused = [(index + first_line, "malformed_row", reason) for index, reason in invalid]
    blank = pc.equal(pc.binary_length(table.column(columns[0])), 0)
    for name in columns[1:]:
        blank = pc.and_(blank, pc.equal(pc.binary_length(table.column(name)), 0))
    blanks = int(pc.sum(blank).as_py() or 0)
    if blanks:
        keep = pc.invert(blank)
        table = table.filter(keep)
        lines = lines[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]
    return Chunk(
        number,
        resume_at,
        records - blanks,
        first_line + records,
        lines,
        table=table,
        refused=refused,
    )


def ndjson_chunks(
    stream: IO[bytes],
    *,
    chunk_bytes: int,
    start: int | None = None,
    first_line: int = 1,
    first_chunk: int = 0,
) -> Iterator[Chunk]:
    """One JSON value per line, in chunks of about ``chunk_bytes``."""
    offset = 0
    if start:
        stream.seek(start)
        offset = start
    number, line = first_chunk, first_line
    for body, resume_at in _record_blocks(stream, chunk_bytes, offset, _line_boundary):
        raw_lines = body.split(b"\n")
        if raw_lines and raw_lines[-1] == b"":
            raw_lines.pop()
        items: list[Any] = []
        lines: list[int] = []
        refused: list[tuple[int, str, str]] = []
        for i, raw in enumerate(raw_lines):
            if not raw.strip():
                continue
            try:
                items.append(orjson.loads(raw))
                lines.append(line + i)
            except orjson.JSONDecodeError as ex:
                refused.append((line + i, "invalid_json", f"not valid JSON: {ex}"))
        yield Chunk(
            number,
            resume_at,
            len(items) + len(refused),
            line + len(raw_lines),
            np.array(lines, dtype=np.int64),
            items=items,
            refused=refused,
        )
        line += len(raw_lines)
        number += 1


def parquet_chunks(
    path: str, *, chunk_rows: int, start: int | None = None, first_chunk: int = 0
) -> Iterator[Chunk]:
    """Record batches of a Parquet file; ``start`` resumes at a row number."""
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as ex:
        raise InputError(f"{path} is not a readable Parquet file: {ex}") from ex
    names = parquet.schema_arrow.names
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)}")
    columns = [n for n in names if n in KNOWN]
    row = 0
    number = first_chunk
    skip = start or 0
    for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
        if row + batch.num_rows <= skip:
            row += batch.num_rows
            continue
        part = batch.slice(skip - row) if skip > row else batch
        row = max(row, skip)
        table = pa.Table.from_batches([part])
        lines = np.arange(row + 1, row + 1 + table.num_rows, dtype=np.int64)
        row += table.num_rows
        yield Chunk(number, row, table.num_rows, row + 1, lines, table=table)
        number += 1
