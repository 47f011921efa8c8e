"""Hostile request bodies: small inputs that expand, and large ones that are cheap to send.

Each attack is what a hostile client (or a buggy one) can send to ``POST /events`` with the
default limits (32 MiB bodies, 50,000 events, 64 KiB events). ``bench/adversity.py`` sends
them to a running service and measures what each costs; ``tests/ingest/test_bounded_cost.py``
asserts the answer and the memory bound of each.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pyarrow as pa

MiB = 1 << 20
MAX_BODY = 32 * MiB  # EVENTS_MAX_BODY_BYTES's default
JSON = "application/json"
NDJSON = "application/x-ndjson"
ARROW = "application/vnd.apache.arrow.stream"


@dataclass(frozen=True, slots=True)
class Attack:
    """One hostile request and what the service must answer."""

    name: str
    content_type: str
    body: bytes
    status: int
    code: str  # error.code of the answer (or of every refused event, for a 400 with events)
    headers: dict[str, str] = field(default_factory=dict)
    what: str = ""
    # A vendor's route (``ingest/vendors/routes.py``): its path and ``vendor:call``.
    path: str = "/events"
    route: str | None = None


def _event(**fields: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2025-08-21T06:52:34+03:00",
        "user_id": "u1",
        "event_type": "view",
    }
    event.update(fields)
    return event


def _ipc(table: pa.Table, *, batch_rows: int | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        if batch_rows is None:
            writer.write_table(table)
        else:
            for batch in table.to_batches(max_chunksize=batch_rows):
                writer.write_batch(batch)
    return bytes(sink.getvalue())


def _arrow_event(properties: pa.Array, rows: int = 1) -> bytes:
    table = pa.table(
        {
            "event_id": pa.array([uuid.uuid4().bytes for _ in range(rows)], pa.binary(16)),
            "occurred_at": pa.array([datetime(2025, 8, 21, tzinfo=UTC)] * rows, pa.timestamp("us")),
            "user_id": pa.array(["u1"] * rows),
            "event_type": pa.array(["view"] * rows),
            "properties": properties,
        }
    )
    return _ipc(table)


def arrow_null_list() -> Attack:
    """One event whose properties hold a list of 100,000,000 nulls: 1 KB on the wire."""
    nulls = pa.ListArray.from_arrays(pa.array([0, 100_000_000], pa.int32()), pa.nulls(100_000_000))
    props = pa.StructArray.from_arrays([nulls], names=["x"])
    return Attack(
        "arrow_null_list",
        ARROW,
        _arrow_event(props),
        413,
        "body_too_large",
        what="1 event, properties {x: list of 1e8 nulls}",
    )


def arrow_large_null_list() -> Attack:
    """The same with a large_list of 2**31 - 1 nulls (the most Arrow's IPC writer writes)."""
    n = (1 << 31) - 1
    nulls = pa.LargeListArray.from_arrays(
        pa.array([0, n], pa.int64()), pa.Array.from_buffers(pa.null(), n, [None])
    )
    props = pa.StructArray.from_arrays([nulls], names=["x"])
    return Attack(
        "arrow_large_null_list",
        ARROW,
        _arrow_event(props),
        413,
        "body_too_large",
        what="1 event, properties {x: large_list of 2^31-1 nulls}",
    )


def arrow_empty_structs() -> Attack:
    """A list of 100,000,000 structs without fields (no buffers at all): {} 1e8 times."""
    n = 100_000_000
    empty = pa.StructArray.from_buffers(pa.struct([]), n, [None], children=[])
    lists = pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), empty)
    props = pa.StructArray.from_arrays([lists], names=["x"])
    return Attack(
        "arrow_empty_structs",
        ARROW,
        _arrow_event(props),
        413,
        "body_too_large",
        what="1 event, properties {x: list of 1e8 empty structs}",
    )


def arrow_many_batches() -> Attack:
    """20,000 record batches of one row each: a C++ chunk per batch."""
    rows = 20_000
    table = pa.table(
        {
            "event_id": pa.array([uuid.uuid4().bytes for _ in range(rows)], pa.binary(16)),
            "occurred_at": pa.array([datetime(2025, 8, 21, tzinfo=UTC)] * rows, pa.timestamp("us")),
            "user_id": pa.array(["u1"] * rows),
            "event_type": pa.array(["view"] * rows),
        }
    )
    return Attack(
        "arrow_many_batches",
        ARROW,
        _ipc(table, batch_rows=1),
        413,
        "too_many_batches",
        what="20,000 record batches of 1 row",
    )


def _fill(unit: bytes, prefix: bytes, suffix: bytes, sep: bytes = b",") -> bytes:
    """``prefix + unit,unit,... + suffix`` just under the body limit."""
    count = (MAX_BODY - len(prefix) - len(suffix) - 1024) // (len(unit) + len(sep))
    return prefix + sep.join([unit] * count) + suffix


def json_empty_objects() -> Attack:
    """A 32 MiB JSON array of {}: eleven million events."""
    return Attack(
        "json_empty_objects",
        JSON,
        _fill(b"{}", b"[", b"]"),
        413,
        "too_many_events",
        what="32 MiB array of {}",
    )


def ndjson_empty_objects() -> Attack:
    """32 MiB of {} lines."""
    return Attack(
        "ndjson_empty_objects",
        NDJSON,
        _fill(b"{}", b"", b"\n", sep=b"\n"),
        413,
        "too_many_events",
        what="32 MiB of {} lines",
    )


def ndjson_blank_lines() -> Attack:
    """32 MiB of empty lines: no event at all."""
    return Attack(
        "ndjson_blank_lines",
        NDJSON,
        b"\n" * (MAX_BODY - 1024),
        400,
        "empty_batch",
        what="32 MiB of newlines",
    )


def json_nested_values() -> Attack:
    """One event whose properties hold eleven million empty objects."""
    head = orjson.dumps([_event()])[:-2] + b',"properties":{"x":['
    return Attack(
        "json_nested_values",
        JSON,
        _fill(b"{}", head, b"]}}]"),
        413,
        "too_many_values",
        what="1 event, properties {x: [{} x 11M]}",
    )


def json_properties_text() -> Attack:
    """properties_json: a string holding a 30 MiB JSON array (parsed, it is 10M objects)."""
    inner = b"[" + b",".join([b"{}"] * (10 * MiB)) + b"]"
    body = orjson.dumps([_event(properties_json=inner.decode())])
    return Attack(
        "json_properties_text",
        JSON,
        body,
        400,
        "event_too_large",
        what="properties_json string of a 30 MiB array",
    )


def json_impossible_dates() -> Attack:
    """50,000 events dated 2025-02-30."""
    events = [_event(occurred_at="2025-02-30T10:00:00Z") for _ in range(50_000)]
    return Attack(
        "json_impossible_dates",
        JSON,
        orjson.dumps(events),
        400,
        "invalid_timestamp",
        what="50,000 events dated 2025-02-30",
    )


def gzip_bomb() -> Attack:
    """1 GiB of spaces inside a JSON array, gzipped to about 1 MB."""
    inner = b"[" + b" " * (1 << 30) + b"]"
    return Attack(
        "gzip_bomb",
        JSON,
        gzip.compress(inner, compresslevel=9),
        413,
        "body_too_large",
        headers={"Content-Encoding": "gzip"},
        what="1 GiB of whitespace, gzipped",
    )


def gzip_empty_objects() -> Attack:
    """The 32 MiB array of {} gzipped: within the compression ratio, refused by count."""
    inner = _fill(b"{}", b"[", b"]")
    return Attack(
        "gzip_empty_objects",
        JSON,
        gzip.compress(inner, compresslevel=9),
        413,
        "body_too_large",
        headers={"Content-Encoding": "gzip"},
        what="32 MiB array of {}, gzipped",
    )


# The vendors' routes. A key in the body (PostHog, Amplitude) is read before anything else:
# the attacks there come with no key header (an empty X-API-Key is no key).
BODY_KEY = {"X-API-Key": ""}
UNKNOWN_KEY = "not-a-key-of-this-service"


def segment_empty_messages() -> Attack:
    """Segment's batch of 32 MiB of {} messages."""
    return Attack(
        "segment_empty_messages",
        JSON,
        _fill(b"{}", b'{"batch":[', b"]}"),
        413,
        "too_many_events",
        what='{"batch": [{} x 11M]}',
        path="/v1/batch",
        route="segment:batch",
    )


def posthog_unknown_key() -> Attack:
    """A maximal PostHog batch of plausible events, with a key the service does not know:
    refused from the key pass, before any event is decoded."""
    unit = orjson.dumps({"event": "view", "distinct_id": "u1", "properties": {"x": 1}})
    head = orjson.dumps({"api_key": UNKNOWN_KEY})[:-1] + b',"batch":['
    return Attack(
        "posthog_unknown_key",
        JSON,
        _fill(unit, head, b"]}"),
        401,
        "unauthorized",
        headers=BODY_KEY,
        what="32 MiB batch, unknown api_key",
        path="/batch/",
        route="posthog:batch",
    )


def amplitude_nested_values() -> Attack:
    """One Amplitude event whose event_properties hold eleven million empty arrays (the key
    in a header)."""
    head = b'{"events":[{"event_type":"t","user_id":"user-1","event_properties":{"x":['
    return Attack(
        "amplitude_nested_values",
        JSON,
        _fill(b"[]", head, b"]}}]}"),
        413,
        "too_many_values",
        what="1 event, event_properties {x: [[] x 11M]}",
        path="/2/httpapi",
        route="amplitude:batch",
    )


def posthog_deep_nesting() -> Attack:
    """A PostHog event nested 10 million arrays deep beside its key: too deep for the key
    pass (msgspec's recursion limit), so the count of values from the bytes refuses it."""
    depth = 10_000_000
    body = orjson.dumps({"api_key": UNKNOWN_KEY})[:-1] + b',"x":' + b"[" * depth + b"]" * depth
    return Attack(
        "posthog_deep_nesting",
        JSON,
        body + b"}",
        413,
        "too_many_values",
        headers=BODY_KEY,
        what="10M nested arrays beside the key",
        path="/e/",
        route="posthog:capture",
    )


def segment_gzip_bomb() -> Attack:
    attack = gzip_bomb()
    return Attack(
        "segment_gzip_bomb",
        JSON,
        attack.body,
        413,
        "body_too_large",
        headers=attack.headers,
        what=attack.what,
        path="/v1/batch",
        route="segment:batch",
    )


VENDOR_ATTACKS: tuple[Callable[[], Attack], ...] = (
    segment_empty_messages,
    posthog_unknown_key,
    amplitude_nested_values,
    posthog_deep_nesting,
    segment_gzip_bomb,
)

ATTACKS: tuple[Callable[[], Attack], ...] = (
    arrow_null_list,
    arrow_large_null_list,
    arrow_empty_structs,
    arrow_many_batches,
    json_empty_objects,
    ndjson_empty_objects,
    ndjson_blank_lines,
    json_nested_values,
    json_properties_text,
    json_impossible_dates,
    gzip_bomb,
    gzip_empty_objects,
)
