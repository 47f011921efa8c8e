"""Request bodies by media type -> validated events (``ValidatedBatch``).

- ``application/json``: an array of events, or ``{"events": [...]}``.
- ``application/x-ndjson`` / ``application/jsonl``: one event per line; a malformed line
  refuses only that line; blank lines are ignored.
- ``application/vnd.apache.arrow.stream``: an Arrow IPC stream with the event columns.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn

import orjson
import pyarrow as pa

from core import metrics
from core.codes import ErrorCode, Refusal
from ingest.arrow_body import read_arrow
from ingest.json_shape import json_shape, ndjson_lines, ndjson_values
from ingest.validate import (
    REFUSAL_CODES,
    Limits,
    SchemaError,
    TooLarge,
    ValidatedBatch,
    validate_records,
)
from ingest.validate_arrow import validate_arrow

JSON = "application/json"
NDJSON = "application/x-ndjson"
ARROW = "application/vnd.apache.arrow.stream"

_MEDIA_TYPES = {
    "application/json": JSON,
    "application/x-ndjson": NDJSON,
    "application/ndjson": NDJSON,
    "application/jsonl": NDJSON,
    "application/x-jsonlines": NDJSON,
    "application/jsonlines": NDJSON,
    "application/vnd.apache.arrow.stream": ARROW,
}
SOURCES = {JSON: "json", NDJSON: "ndjson", ARROW: "arrow"}
# Their series exist from start-up (at 0), so rate() sees the first events and refusals.
metrics.touch(metrics.EVENTS_RECEIVED, SOURCES.values())
metrics.touch(metrics.EVENTS_REJECTED, REFUSAL_CODES)
# JSON values (objects, arrays, separated values) one body may hold: bounds the memory of
# decoding it (``EVENTS_MAX_JSON_VALUES``).
DEFAULT_MAX_VALUES = 1_000_000


def media_type(content_type: str | None) -> str:
    """The canonical media type of a Content-Type header (JSON when there is none)."""
    if not content_type:
        return JSON
    base, _, params = content_type.partition(";")
    base = base.strip().lower()
    try:
        media = _MEDIA_TYPES[base]
    except KeyError:
        raise Refusal(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {base!r} is not supported",
            supported=sorted(_MEDIA_TYPES),
        ) from None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            # JSON and NDJSON are UTF-8 (RFC 8259); decoding as anything else would
            # silently change the text.
            raise Refusal(
                ErrorCode.UNSUPPORTED_CHARSET, f"charset {charset!r} is not supported; send UTF-8"
            )
    return media


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while decoding a batch.

    PERF: decoding allocates many small objects that live until the request ends; every
    ~700 allocations the collector would walk them all again, which can double the time
    spent decoding a large batch. Nothing here creates reference cycles.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def check_count(n: int, max_events: int) -> None:
    if n > max_events:
        raise Refusal(
            ErrorCode.TOO_MANY_EVENTS,
            f"{n} events in one request; the limit is {max_events}",
            limit=max_events,
        )
    if n == 0:
        raise Refusal(ErrorCode.EMPTY_BATCH, "the request contains no events")


def too_many_events(max_events: int) -> NoReturn:
    raise Refusal(
        ErrorCode.TOO_MANY_EVENTS,
        f"more than {max_events} events in one request; the limit is {max_events}",
        limit=max_events,
    )


def check_values(n: int, max_values: int) -> None:
    if n > max_values:
        raise Refusal(
            ErrorCode.TOO_MANY_VALUES,
            f"the body holds more than {max_values} JSON values (objects, arrays and "
            "separated values); send fewer or smaller events per request",
            limit=max_values,
        )


def load_json(body: bytes, *, max_events: int, max_values: int) -> Any:
    """A JSON body decoded, once its events and values are counted from the bytes within
    the limits (``ingest/json_shape.py``): nothing is built for a body that would be
    refused for its size."""
    shape = json_shape(body, max_events=max_events, max_values=max_values)
    if shape.events > max_events:
        too_many_events(max_events)
    check_values(shape.values, max_values)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as ex:
        raise Refusal(ErrorCode.INVALID_JSON, f"the body is not valid JSON: {ex}") from ex


def decode_json(
    body: bytes,
    limits: Limits,
    now: datetime,
    max_events: int,
    max_values: int = DEFAULT_MAX_VALUES,
) -> ValidatedBatch:
    doc = load_json(body, max_events=max_events, max_values=max_values)
    events: Any = doc.get("events") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        raise Refusal(
            ErrorCode.INVALID_BODY, 'the body must be a JSON array of events or {"events": [...]}'
        )
    check_count(len(events), max_events)
    return validate_records(events, limits, now)


def decode_ndjson(
    body: bytes,
    limits: Limits,
    now: datetime,
    max_events: int,
    max_values: int = DEFAULT_MAX_VALUES,
) -> ValidatedBatch:
    numbered = ndjson_lines(body, max_events=max_events)
    if numbered is None:
        too_many_events(max_events)
    check_count(len(numbered), max_events)
    check_values(ndjson_values(body, max_values=max_values), max_values)
    loads = orjson.loads
    pre_refused: dict[int, tuple[str, str]] = {}
    try:
        # PERF: the common case, every line valid, is one comprehension.
        items = [loads(line) for _, line in numbered]
    except orjson.JSONDecodeError:
        items = []
        for i, (n, line) in enumerate(numbered):
            try:
                items.append(loads(line))
            except orjson.JSONDecodeError as ex:
                items.append(None)
                pre_refused[i] = ("invalid_json", f"line {n} is not valid JSON: {ex}")
    return validate_records(
        items, limits, now, lines=[n for n, _ in numbered], pre_refused=pre_refused
    )


def decode_arrow(
    body: bytes, limits: Limits, now: datetime, max_events: int, max_bytes: int
) -> ValidatedBatch:
    table = read_arrow(body, max_bytes, max_events)
    check_count(table.num_rows, max_events)
    try:
        return validate_arrow(table, limits, now, max_bytes=max_bytes)
    except SchemaError as ex:
        raise Refusal(ErrorCode.INVALID_ARROW_SCHEMA, str(ex)) from ex
    except TooLarge as ex:
        raise Refusal(ErrorCode.BODY_TOO_LARGE, str(ex), limit=max_bytes) from ex
    except pa.ArrowException as ex:
        # Data Arrow itself cannot process (offsets overflowing, inconsistent buffers...).
        raise Refusal(ErrorCode.INVALID_ARROW, f"the Arrow data cannot be processed: {ex}") from ex


def decode_batch(
    media: str,
    body: bytes,
    *,
    limits: Limits,
    now: datetime,
    max_events: int,
    max_bytes: int,
    max_values: int = DEFAULT_MAX_VALUES,
) -> ValidatedBatch:
    """Decode and validate a (decompressed) body of media type ``media``."""
    if body.startswith(b"\xef\xbb\xbf") and media != ARROW:
        body = body[3:]  # a UTF-8 byte order mark
    with gc_paused():
        if media == JSON:
            return decode_json(body, limits, now, max_events, max_values)
        if media == NDJSON:
            return decode_ndjson(body, limits, now, max_events, max_values)
        return decode_arrow(body, limits, now, max_events, max_bytes)
