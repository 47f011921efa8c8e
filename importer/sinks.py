"""Where an import's validated chunks go: straight into the store, or through the queue.

The import loop (``importer/run.py``) is the same for both; a sink says whether it can
resume, stores one chunk, and reports what the store made of it (at once, or once the
workers have committed everything).

- ``StoreSink`` (the default): one chunk per transaction through ``storage/bulk.py``, hot
  days into PostgreSQL, cold days straight into the lake, with ``import_chunks`` for
  ``--resume``.
- ``QueueSink`` (``--via-queue``): each chunk as messages of at most ``MESSAGE_ROWS`` events
  (the API's message contract, key id ``import``), each confirmed by the broker; the
  workers store them exactly once as for the API. There is no ``--resume`` on this path:
  running it again is safe and adds nothing that is already stored.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Protocol

import pyarrow as pa

from core.config import Settings
from core.ids import uuid7
from importer.readers import InputError
from pipeline.message import EVENT_SCHEMA, BatchMeta, amqp_headers, encode_message
from pipeline.publisher import Publisher
from pipeline.topology import Topology
from storage.bulk import BulkStore, ChunkRecord
from storage.db import connect
from storage.lake import Lake

MESSAGE_ROWS = 10_000
KEY_ID = "import"  # the key id recorded for imported batches


class Sink(Protocol):
    """What the import loop needs of the place chunks go."""

    resumable: bool

    async def open(self) -> None: ...

    async def committed(self, source: str) -> list[ChunkRecord]:
        """Chunks of ``source`` already stored by an earlier run (resumable sinks only)."""
        ...

    async def forget(self, source: str) -> None:
        """Drop the record of an earlier, unfinished run of ``source``."""
        ...

    async def put(
        self, source: str, record: ChunkRecord, rows: pa.Table, fmt: str
    ) -> tuple[int, int]:
        """Store one chunk (``STAGING_COLUMNS``, unique ids): (imported, duplicates) as far as
        known now."""
        ...

    async def finish(self) -> tuple[int, int]:
        """(imported, duplicates) learnt only at the end."""
        ...

    async def close(self) -> None: ...


class StoreSink:
    """Chunks into PostgreSQL and the lake, one transaction each, exactly once."""

    resumable = True

    def __init__(self, settings: Settings) -> None:
        self._store = BulkStore(
            settings.database_url, Lake(settings.lake_dir), hot_days=settings.hot_days
        )

    async def open(self) -> None:
        await self._store.open()

    async def committed(self, source: str) -> list[ChunkRecord]:
        return await self._store.committed(source)

    async def forget(self, source: str) -> None:
        await self._store.forget(source)

    async def put(
        self, source: str, record: ChunkRecord, rows: pa.Table, fmt: str
    ) -> tuple[int, int]:
        stored = await self._store.store(source, record, rows)
        return stored.imported, stored.duplicates

    async def finish(self) -> tuple[int, int]:
        return 0, 0

    async def close(self) -> None:
        await self._store.close()


class QueueSink:
    """Chunks through RabbitMQ as the API sends them; counts once the workers committed."""

    resumable = False

    def __init__(self, settings: Settings, *, commit_timeout: float = 3600.0) -> None:
        self._url = settings.database_url
        self._publisher = Publisher(
            settings.rabbitmq_url,
            Topology.from_settings(settings),
            confirm_timeout=settings.publish_timeout,
        )
        self._batch_ids: list[uuid.UUID] = []
        self._commit_timeout = commit_timeout

    async def open(self) -> None:
        await self._publisher.start()

    async def committed(self, source: str) -> list[ChunkRecord]:
        raise InputError("--resume is not available with --via-queue (re-running is safe)")

    async def forget(self, source: str) -> None:
        return None

    async def put(
        self, source: str, record: ChunkRecord, rows: pa.Table, fmt: str
    ) -> tuple[int, int]:
        events = rows.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
        for offset in range(0, events.num_rows, MESSAGE_ROWS):
            part = events.slice(offset, MESSAGE_ROWS)
            meta = BatchMeta(uuid7(), datetime.now(UTC), KEY_ID, fmt)
            await self._publisher.publish(
                encode_message(part, meta),
                message_id=str(meta.batch_id),
                timestamp=meta.received_at,
                headers=amqp_headers(meta, part.num_rows),
            )
            self._batch_ids.append(meta.batch_id)
        return 0, 0

    async def finish(self) -> tuple[int, int]:
        """Poll ``ingest_batches`` until the workers committed every batch."""
        if not self._batch_ids:
            return 0, 0
        conn = await connect(self._url)
        deadline = time.monotonic() + self._commit_timeout
        try:
            while True:
                row = await conn.fetchrow(
                    "SELECT count(*) AS n, coalesce(sum(inserted), 0) AS inserted, "
                    "coalesce(sum(duplicates), 0) AS duplicates FROM ingest_batches "
                    "WHERE batch_id = ANY($1::uuid[])",
                    self._batch_ids,
                )
                if row["n"] == len(self._batch_ids):
                    return int(row["inserted"]), int(row["duplicates"])
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{len(self._batch_ids) - row['n']} batches still not stored; "
                        "are workers running?"
                    )
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    async def close(self) -> None:
        await self._publisher.close()
