"""``import_events --via-queue``: send the validated rows through RabbitMQ, like the API.

Each chunk goes out as messages of at most ``MESSAGE_ROWS`` events (the API's message
contract, key id ``import``), each confirmed by the broker; then the import waits until the
workers have committed every batch and reports their counts. Exactly-once holds as for
the API (the workers' ledger). There is no ``--resume`` on this path: running it again
is safe and adds nothing that is already stored.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import IO

import asyncpg

from core.config import Settings
from core.ids import uuid7
from importer.progress import Progress
from importer.readers import InputError
from importer.rejects import RejectWriter
from importer.run import (
    Options,
    Summary,
    TooManyErrors,
    _chunks,
    _open,
    detect_format,
    expand,
    prepare,
)
from ingest.validate import Limits
from pipeline.message import EVENT_SCHEMA, BatchMeta, amqp_headers, encode_message
from pipeline.publisher import Publisher
from pipeline.topology import Topology
from storage.db import connect

MESSAGE_ROWS = 10_000
KEY_ID = "import"


async def run_via_queue(
    settings: Settings, paths: list[str], options: Options, out: IO[str] = sys.stderr
) -> Summary:
    if options.resume:
        raise InputError("--resume is not available with --via-queue (re-running is safe)")
    files = expand(paths)
    if not files:
        raise InputError("nothing to import (no CSV, NDJSON or Parquet file found)")
    summary = Summary()
    rejects = RejectWriter(options.rejects, files[0])
    summary.rejects_path = rejects.path
    progress = Progress(out, enabled=options.progress)
    publisher = Publisher(
        settings.rabbitmq_url,
        Topology.from_settings(settings),
        confirm_timeout=settings.publish_timeout,
    )
    await publisher.start()
    limits = Limits.from_settings(settings)
    batch_ids: list[uuid.UUID] = []
    started = time.perf_counter()
    try:
        for path in files:
            fmt = detect_format(path, options.fmt)
            stream, _ = await asyncio.to_thread(_open, path)
            progress.start_file(path, None, 0)
            try:
                for chunk in _chunks(path, fmt, options, None, stream):
                    prepared = await asyncio.to_thread(prepare, chunk, limits)
                    rejects.write(path, prepared.refused)
                    summary.read += chunk.records
                    summary.rejected += len(prepared.refused)
                    summary.duplicates += prepared.in_chunk_duplicates
                    if options.max_errors is not None and summary.rejected > options.max_errors:
                        raise TooManyErrors(f"{summary.rejected} rows refused")
                    events = prepared.table.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
                    for offset in range(0, events.num_rows, MESSAGE_ROWS):
                        part = events.slice(offset, MESSAGE_ROWS)
                        meta = BatchMeta(uuid7(), datetime.now(UTC), KEY_ID, fmt)
                        await publisher.publish(
                            encode_message(part, meta),
                            message_id=str(meta.batch_id),
                            timestamp=meta.received_at,
                            headers=amqp_headers(meta, part.num_rows),
                        )
                        batch_ids.append(meta.batch_id)
                    progress.advance(None, summary)
            finally:
                if path != "-":
                    stream.close()
            summary.files.append(path)
        inserted, duplicates = await _wait_for_commits(settings.database_url, batch_ids)
        summary.imported += inserted
        summary.duplicates += duplicates
    finally:
        summary.seconds = time.perf_counter() - started
        progress.close()
        rejects.close()
        await publisher.close()
    return summary


async def _wait_for_commits(
    url: str, batch_ids: list[uuid.UUID], timeout: float = 3600.0
) -> tuple[int, int]:
    """Poll ``ingest_batches`` until the workers committed every batch."""
    conn = await connect(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(sum(inserted), 0) AS inserted, "
                "coalesce(sum(duplicates), 0) AS duplicates FROM ingest_batches "
                "WHERE batch_id = ANY($1::uuid[])",
                batch_ids,
            )
            if row["n"] == len(batch_ids):
                return int(row["inserted"]), int(row["duplicates"])
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(batch_ids) - row['n']} batches still not stored; are workers running?"
                )
            await asyncio.sleep(0.2)
    except asyncpg.PostgresError:
        raise
    finally:
        await conn.close()
