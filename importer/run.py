"""``import_events``: read, validate and store files of history, chunk by chunk.

A thread reads and validates the next chunk while the current one is being stored (pyarrow,
Polars, orjson and PostgreSQL all work outside the GIL or in another process), through a
queue of two chunks: memory stays bounded whatever the file size.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from core.config import Settings
from core.ids import uuid7
from importer.progress import Progress
from importer.readers import Chunk, InputError, csv_chunks, ndjson_chunks, parquet_chunks
from importer.rejects import RejectWriter
from importer.sinks import KEY_ID, QueueSink, Sink, StoreSink
from ingest.media import gc_paused
from ingest.validate import Limits, validate_records
from ingest.validate_arrow import validate_arrow
from storage.bulk import ChunkRecord
from storage.staging import Batch, stage

FORMATS = {
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_NO_LIMIT = 1 << 40

# A refused row: line, field, code, message, event_id.
Refused = tuple[int, str | None, str, str, str | None]


class TooManyErrors(Exception):
    """More refused rows than ``--max-errors`` allows."""


@dataclass(slots=True)
class Options:
    fmt: str | None = None
    rejects: str | None = None
    max_errors: int | None = None
    resume: bool = False
    chunk_bytes: int = 32 * 1024 * 1024
    chunk_rows: int = 200_000
    progress: bool | None = None  # None: a bar on a terminal, plain lines otherwise
    fault: Callable[[str, int], None] | None = None  # tests: (step, chunk number)


@dataclass(slots=True)
class Summary:
    read: int = 0
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    seconds: float = 0.0
    resumed_chunks: int = 0
    files: list[str] = field(default_factory=list)
    rejects_path: str | None = None

    @property
    def rows_per_s(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (
            f"read {self.read}, imported {self.imported}, duplicates {self.duplicates}, "
            f"rejected {self.rejected} in {self.seconds:.1f} s ({self.rows_per_s:,.0f} rows/s)"
            + (
                f"; resumed after {self.resumed_chunks} committed chunk(s)"
                if self.resumed_chunks
                else ""
            )
            + (f"; rejects in {self.rejects_path}" if self.rejected and self.rejects_path else "")
        )


def expand(paths: list[str]) -> list[str]:
    """Files to import: directories contribute their files (sorted), ``-`` is stdin."""
    found: list[str] = []
    for p in paths:
        path = Path(p)
        if p != "-" and path.is_dir():
            found += sorted(
                str(f) for f in path.rglob("*") if f.is_file() and f.suffix.lower() in FORMATS
            )
        else:
            found.append(p)
    return found


def detect_format(path: str, fmt: str | None) -> str:
    if fmt:
        return fmt
    if path == "-":
        raise InputError("reading standard input needs --format csv|ndjson|parquet")
    suffixes = [s.lower() for s in Path(path).suffixes]
    for suffix in reversed(suffixes):
        if suffix in FORMATS:
            return FORMATS[suffix]
    raise InputError(f"cannot tell the format of {path}; use --format csv|ndjson|parquet")


def fingerprint(path: str, fmt: str) -> str:
    """Identifies an input by its contents (size and the hashes of its two ends)."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(f"{fmt}:{size}:".encode())
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            digest.update(f.read(1 << 20))
    return f"{fmt}:{size}:{digest.hexdigest()[:32]}"


@dataclass(slots=True)
class Prepared:
    chunk: Chunk
    table: pa.Table
    in_chunk_duplicates: int
    refused: list[Refused]


def prepare(chunk: Chunk, limits: Limits) -> Prepared:
    with gc_paused():  # PERF: see ingest.media.gc_paused
        return _prepare(chunk, limits)


def _prepare(chunk: Chunk, limits: Limits) -> Prepared:
    now = datetime.now(UTC)
    if chunk.table is not None:
        batch = validate_arrow(chunk.table, limits, now, max_bytes=_NO_LIMIT, lines=chunk.lines)
    else:
        batch = validate_records(chunk.items or [], limits, now, lines=chunk.lines)
    refused: list[Refused] = [
        (line, None, code, message, None) for line, code, message in chunk.refused
    ]
    refused += [(r.line or 0, r.field, r.code, r.message, r.event_id) for r in batch.rejected]
    refused.sort(key=lambda r: r[0])
    # One staging contract for the worker and the importer (storage/staging.py); the
    # payloads are computed where the rows are stored.
    staged = stage([Batch(batch.table, uuid7(), KEY_ID, now)], prepare=False)
    return Prepared(chunk, staged.rows.table, staged.repeats, refused)


def _chunks(
    path: str, fmt: str, options: Options, start: ChunkRecord | None, stream: IO[bytes]
) -> Iterator[Chunk]:
    resume = {"start": start.resume_at, "first_chunk": start.chunk + 1} if start else {}
    if fmt == "csv":
        line = {"first_line": start.next_line} if start else {}
        return csv_chunks(stream, chunk_bytes=options.chunk_bytes, **resume, **line)
    if fmt == "ndjson":
        line = {"first_line": start.next_line} if start else {}
        return ndjson_chunks(stream, chunk_bytes=options.chunk_bytes, **resume, **line)
    return parquet_chunks(path, chunk_rows=options.chunk_rows, **resume)


def _produce(
    chunks: Iterator[Chunk], limits: Limits, out: queue.Queue[Any], stop: threading.Event
) -> None:
    """Reader thread: read and validate chunks ahead of the store."""
    try:
        for chunk in chunks:
            prepared = prepare(chunk, limits)
            while not stop.is_set():
                try:
                    out.put(prepared, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        out.put(None)
    except BaseException as ex:  # handed to the consumer, which re-raises it
        out.put(ex)


def _open(path: str) -> tuple[IO[bytes], int | None]:
    if path == "-":
        return sys.stdin.buffer, None
    try:
        return open(path, "rb"), os.path.getsize(path)
    except OSError as ex:
        raise InputError(f"cannot read {path}: {ex.strerror or ex}") from ex


async def import_file(
    path: str,
    *,
    settings: Settings,
    options: Options,
    sink: Sink,
    rejects: RejectWriter,
    summary: Summary,
    progress: Progress,
) -> None:
    fmt = detect_format(path, options.fmt)
    if path == "-" and fmt == "parquet":
        raise InputError("Parquet cannot be read from standard input; give a file")
    if path == "-" and options.resume:
        raise InputError("--resume needs a file (standard input cannot be read twice)")
    stream, size = await asyncio.to_thread(_open, path)
    source = await asyncio.to_thread(fingerprint, path, fmt) if path != "-" else f"stdin:{uuid7()}"
    done = await sink.committed(source) if sink.resumable else []
    start = done[-1] if (options.resume and done) else None
    if start is not None:
        summary.resumed_chunks += len(done)
    elif done:
        await sink.forget(source)
    progress.start_file(path, size, start.resume_at if start and fmt != "parquet" else 0)
    limits = Limits.from_settings(settings)
    handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()
    reader = threading.Thread(
        target=_produce,
        args=(_chunks(path, fmt, options, start, stream), limits, handoff, stop),
        name="import-reader",
        daemon=True,
    )
    reader.start()
    try:
        while True:
            item = await asyncio.to_thread(handoff.get)
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            prepared: Prepared = item
            chunk = prepared.chunk
            rejected = len(prepared.refused)
            rejects.write(path, prepared.refused)
            summary.read += chunk.records
            summary.rejected += rejected
            if options.max_errors is not None and summary.rejected > options.max_errors:
                raise TooManyErrors(
                    f"{summary.rejected} rows refused, more than --max-errors "
                    f"{options.max_errors}; chunks before this one are stored"
                )
            if options.fault:
                options.fault("before_store", chunk.number)
            imported, duplicates = await sink.put(
                source,
                ChunkRecord(
                    chunk.number, chunk.resume_at, chunk.records, chunk.next_line, 0, 0, rejected
                ),
                prepared.table,
                fmt,
            )
            summary.imported += imported
            summary.duplicates += duplicates + prepared.in_chunk_duplicates
            if options.fault:
                options.fault("stored", chunk.number)
            progress.advance(chunk.resume_at if fmt != "parquet" else None, summary)
    finally:
        stop.set()
        if path != "-":
            stream.close()
    summary.files.append(path)


async def run_import(
    settings: Settings,
    paths: list[str],
    options: Options,
    out: IO[str] = sys.stderr,
    *,
    via_queue: bool = False,
) -> Summary:
    """Import every path, into the store or (``via_queue``) through the queue; raises
    InputError, TooManyErrors, or a server error."""
    sink: Sink = QueueSink(settings) if via_queue else StoreSink(settings)
    if options.resume and not sink.resumable:
        raise InputError("--resume is not available with --via-queue (re-running is safe)")
    files = expand(paths)
    if not files:
        raise InputError("nothing to import (no CSV, NDJSON or Parquet file found)")
    summary = Summary()
    rejects = RejectWriter(options.rejects, files[0])
    summary.rejects_path = rejects.path
    progress = Progress(out, enabled=options.progress)
    started = time.perf_counter()
    await sink.open()
    try:
        for path in files:
            await import_file(
                path,
                settings=settings,
                options=options,
                sink=sink,
                rejects=rejects,
                summary=summary,
                progress=progress,
            )
        imported, duplicates = await sink.finish()
        summary.imported += imported
        summary.duplicates += duplicates
    finally:
        summary.seconds = time.perf_counter() - started
        progress.close()
        rejects.close()
        await sink.close()
    return summary
