"""The shared sample (``shared/data/events_sample.csv``) in every body format, and what
PostgreSQL must hold after it is stored, computed independently of the service's code."""

from __future__ import annotations

import csv
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

# A copy of shared/data/events_sample.csv (CRLF, +03:00 offsets, quoted JSON), kept in the
# repository so a fresh clone anywhere can run the tests.
_DEFAULT = Path(__file__).resolve().parent / "data" / "events_sample.csv"
SAMPLE_CSV = Path(os.environ.get("EVENTS_SAMPLE_CSV", _DEFAULT))


def rows() -> list[dict[str, str]]:
    # newline="" keeps the CRLF line endings from leaking into the last column.
    with SAMPLE_CSV.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def events() -> list[dict[str, Any]]:
    """As a client would send them: numeric user ids as integers, properties as objects."""
    out = []
    for r in rows():
        uid: Any = int(r["user_id"]) if r["user_id"].isdigit() else r["user_id"]
        out.append(
            {
                "event_id": r["event_id"],
                "occurred_at": r["occurred_at"],
                "user_id": uid,
                "event_type": r["event_type"],
                "properties": json.loads(r["properties_json"]),
            }
        )
    return out


def json_body() -> bytes:
    return orjson.dumps(events())


def ndjson_body() -> bytes:
    return b"\n".join(orjson.dumps(e) for e in events()) + b"\n"


def arrow_body() -> bytes:
    """Arrow IPC stream: 16-byte ids, real timestamps, integer user ids, JSON text."""
    evs = events()
    table = pa.table(
        {
            "event_id": pa.array([uuid.UUID(e["event_id"]).bytes for e in evs], pa.binary(16)),
            "occurred_at": pa.array(
                [datetime.fromisoformat(e["occurred_at"]) for e in evs],
                pa.timestamp("us", tz="UTC"),
            ),
            "user_id": pa.array([int(e["user_id"]) for e in evs], pa.int64()),
            "event_type": pa.array([e["event_type"] for e in evs]).dictionary_encode(),
            "properties": pa.array([json.dumps(e["properties"]) for e in evs], pa.string()),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def expected_rows() -> dict[uuid.UUID, tuple[datetime, str, str, dict[str, Any]]]:
    """event_id -> (occurred_at in UTC, user_id, event_type, properties)."""
    return {
        uuid.UUID(r["event_id"]): (
            datetime.fromisoformat(r["occurred_at"]).astimezone(UTC),
            r["user_id"],
            r["event_type"],
            json.loads(r["properties_json"]),
        )
        for r in rows()
    }
