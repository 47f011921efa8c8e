"""Validation of Arrow IPC bodies: client column types -> the checks of ``validate.py``.

Accepted column types (anything else refuses the request with 400 ``invalid_arrow_schema``):

- ``event_id``: string, 16-byte binary (``fixed_size_binary(16)``, ``binary``, the
  ``arrow.uuid`` extension type), or a dictionary of strings;
- ``occurred_at``: timestamp of any unit (no time zone means UTC) or ISO-8601 string;
- ``user_id``: string or integer; ``event_type``: string (or dictionary of strings);
- ``properties`` (or ``properties_json``), optional: JSON text, or a struct whose fields are
  null, booleans, numbers, strings, lists or structs of those.

Sizes are checked before anything expands: a dictionary or string-view column is measured
(lengths of the values it would produce) before it is decoded, and a struct ``properties``
column by the JSON text it would become (``ingest/arrow_size.py``: null-typed children and
empty structs, which carry no buffers, are counted by their lengths) before it is encoded.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ingest.arrow_size import MAX_FIELDS, UnsupportedType, count_fields, json_bytes
from ingest.validate import (
    EMPTY_OBJECT,
    Describer,
    Limits,
    Lines,
    Refusals,
    SchemaError,
    TooLarge,
    ValidatedBatch,
    event_id_column,
    finish,
    json_object_column,
    text_column,
    timestamp_column,
)

_REQUIRED = ("event_id", "occurred_at", "user_id", "event_type")
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)


def _lengths(array: pa.Array) -> pa.Array:
    """Length of each value of a string/binary column, views included."""
    if pa.types.is_string_view(array.type) or pa.types.is_binary_view(array.type):
        # A view is 16 bytes whose first 4 are the value's length (Arrow's columnar spec).
        views = np.frombuffer(array.buffers()[1], dtype=np.int32).reshape(-1, 4)
        lengths = views[array.offset : array.offset + len(array), 0].astype(np.int64)
        return pa.array(lengths, mask=np.asarray(array.is_null()))
    return pc.binary_length(array)


def _expanded_bytes(array: pa.Array) -> int:
    """Bytes the values of a string/binary (or dictionary of those) column occupy decoded."""
    if pa.types.is_dictionary(array.type):
        lengths = _lengths(array.dictionary)
        return int(pc.sum(pc.take(lengths, array.indices)).as_py() or 0)
    return int(pc.sum(_lengths(array)).as_py() or 0)


def _plain(table: pa.Table, name: str, max_bytes: int) -> pa.Array:
    """Column ``name`` as one chunk: no dictionary, view, large offsets or extension type."""
    array = table.column(name).combine_chunks()
    if isinstance(array.type, pa.BaseExtensionType):
        array = array.storage
    value_type = array.type.value_type if pa.types.is_dictionary(array.type) else array.type
    textual = (
        pa.types.is_string(value_type)
        or pa.types.is_large_string(value_type)
        or pa.types.is_string_view(value_type)
        or pa.types.is_binary(value_type)
        or pa.types.is_large_binary(value_type)
        or pa.types.is_binary_view(value_type)
    )
    if textual and _expanded_bytes(array) > max_bytes:
        raise TooLarge(f"column {name} would be larger than {max_bytes} bytes once decoded")
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
        array = array.cast(pa.string())
    if pa.types.is_large_binary(array.type) or pa.types.is_binary_view(array.type):
        array = array.cast(pa.binary())
    return array


def _json_encodable(t: pa.DataType) -> bool:
    """Types a struct ``properties`` may contain (what Polars encodes to JSON faithfully)."""
    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        return (
            len(set(names)) == len(names)
            and not any("\x00" in name for name in names)
            and all(_json_encodable(t.field(i).type) for i in range(t.num_fields))
        )
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _json_encodable(t.value_type)
    return bool(
        pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
    )


def _struct_properties(raw: pa.Array, max_bytes: int) -> pa.Array:
    fields = count_fields(raw.type)
    if fields > MAX_FIELDS:
        raise SchemaError(f"properties struct has {fields} fields; the limit is {MAX_FIELDS}")
    if not _json_encodable(raw.type):
        raise SchemaError(
            f"properties struct has fields that cannot be JSON ({raw.type}); use numbers, "
            "strings, booleans, lists and structs with distinct names"
        )
    try:
        expanded = json_bytes(raw)
    except UnsupportedType as ex:
        raise SchemaError(str(ex)) from ex
    if expanded > max_bytes:
        raise TooLarge(
            f"properties would be about {expanded} bytes of JSON once expanded; the limit is "
            f"{max_bytes}"
        )
    try:
        # PERF: Polars encodes a whole struct column to JSON text in Rust.
        encoded = pl.Series(pl.from_arrow(raw)).struct.json_encode().to_arrow()
    except BaseException as ex:  # Polars can panic (PanicException is a BaseException)
        if isinstance(ex, _FATAL):
            raise
        raise SchemaError(f"properties struct cannot be encoded as JSON: {ex}") from ex
    return pc.fill_null(encoded.cast(pa.string()), EMPTY_OBJECT.decode())


def _properties(table: pa.Table, refusals: Refusals, limits: Limits, max_bytes: int) -> pa.Array:
    """properties as JSON text or struct (or properties_json as text) -> JSON object text."""
    names = set(table.column_names)
    name = "properties" if "properties" in names else "properties_json"
    if name not in names:
        return pa.array([EMPTY_OBJECT.decode()] * table.num_rows, pa.string())
    raw = _plain(table, name, max_bytes)
    if pa.types.is_struct(raw.type):
        return _struct_properties(raw, max_bytes)
    if not pa.types.is_string(raw.type):
        raise SchemaError(f"{name} must be JSON text or a struct, not {raw.type}")
    # JSON text written by the client: parsed once per row to check it (the JSON decode of
    # the Arrow path).
    return json_object_column(raw, name, refusals, limits)


def validate_arrow(
    table: pa.Table,
    limits: Limits,
    now: datetime,
    *,
    max_bytes: int,
    lines: Lines | None = None,
) -> ValidatedBatch:
    """Validate an Arrow table sent by a client (``lines``: where each row came from)."""
    names = table.column_names
    if len(set(names)) != len(names):
        raise SchemaError("column names must be unique")
    missing = [c for c in _REQUIRED if c not in names]
    if missing:
        raise SchemaError(f"missing column(s): {', '.join(missing)}")
    n = int(table.num_rows)
    refusals = Refusals(n)

    event_id = _plain(table, "event_id", max_bytes)
    t = event_id.type
    if not (
        pa.types.is_string(t)
        or pa.types.is_binary(t)
        or (pa.types.is_fixed_size_binary(t) and t.byte_width == 16)
    ):
        raise SchemaError(f"event_id must be string or 16-byte binary, not {t}")

    occurred_at = _plain(table, "occurred_at", max_bytes)
    if not (pa.types.is_string(occurred_at.type) or pa.types.is_timestamp(occurred_at.type)):
        raise SchemaError(f"occurred_at must be a timestamp or string, not {occurred_at.type}")

    user_id = _plain(table, "user_id", max_bytes)
    if pa.types.is_integer(user_id.type):
        user_id = user_id.cast(pa.string())
    elif not pa.types.is_string(user_id.type):
        raise SchemaError(f"user_id must be a string or integer, not {user_id.type}")

    event_type = _plain(table, "event_type", max_bytes)
    if not pa.types.is_string(event_type.type):
        raise SchemaError(f"event_type must be a string, not {event_type.type}")

    columns = {
        "event_id": event_id_column(event_id, refusals),
        "occurred_at": timestamp_column(occurred_at, refusals, limits, now),
        "user_id": text_column(user_id, "user_id", limits.max_user_id_length, refusals),
        "event_type": text_column(event_type, "event_type", limits.max_event_type_length, refusals),
        "properties": _properties(table, refusals, limits, max_bytes),
    }
    return finish(n, refusals, columns, limits, Describer(event_id, lines))
