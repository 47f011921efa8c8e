"""Column-wise validation: decoded request columns in, ``EVENT_SCHEMA`` table and refusals out.

Every check works on whole Arrow columns (regular expressions, casts, comparisons in
Arrow's C++ kernels); a Python loop runs only over the rows that are refused, to describe
them. Each refused row gets exactly one entry: the first failing field, in the order
``event_id, occurred_at, user_id, event_type, properties``.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from core.config import Settings
from ingest.answers import Rejection
from pipeline.message import EVENT_SCHEMA

# Where each row came from (NDJSON / CSV line numbers), as a list or a NumPy array.
Lines = Sequence[int] | np.ndarray

FIELDS = ("event_id", "occurred_at", "user_id", "event_type", "properties", "properties_json")

# A UUID as 32 hex digits, hyphens optional between the usual groups (PostgreSQL's own
# input rules, minus braces).
_UUID_RE = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
# ISO-8601 / RFC 3339 date-time: a time is required, seconds and fraction are optional, the
# offset is optional (none means UTC).
_TIMESTAMP_RE = (
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}(:\d{2}(:\d{2}([.,]\d+)?)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?$"
)
_HAS_OFFSET_RE = r"(Z|[+-]\d{2}(:?\d{2})?)$"
# ``\u0000`` written in JSON text (an odd number of backslashes before it): PostgreSQL's
# jsonb refuses it, so it must be refused here rather than poison a whole COPY.
_JSON_NUL_RE = r"(^|[^\\])(\\\\)*\\u0000"
_NIL_UUIDS = pa.array([b"\x00" * 16, b"\xff" * 16], pa.binary(16))


@dataclass(frozen=True, slots=True)
class Limits:
    """The per-event limits validation enforces."""

    max_event_bytes: int = 64 * 1024
    max_user_id_length: int = 256
    max_event_type_length: int = 128
    max_future: timedelta = timedelta(hours=1)
    min_occurred_at: datetime = datetime(1970, 1, 1, tzinfo=UTC)

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_event_bytes=settings.max_event_bytes,
            max_user_id_length=settings.max_user_id_length,
            max_event_type_length=settings.max_event_type_length,
            max_future=timedelta(seconds=settings.max_future_seconds),
            min_occurred_at=settings.min_occurred_at,
        )


@dataclass(slots=True)
class ValidatedBatch:
    """The accepted events as an ``EVENT_SCHEMA`` table, and the refused ones."""

    table: pa.Table
    received: int
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return int(self.table.num_rows)


class SchemaError(ValueError):
    """An Arrow body whose columns cannot hold events at all (the whole request is refused)."""


class TooLarge(ValueError):
    """An Arrow body that would exceed the size limit once decoded (413)."""


# ---------------------------------------------------------------------------------------
# Refusal bookkeeping: one code per row, first failure wins.

_CODES = (
    "",
    "invalid_json",
    "not_an_object",
    "required",
    "invalid_type",
    "invalid_uuid",
    "invalid_timestamp",
    "too_early",
    "too_far_in_future",
    "empty",
    "too_long",
    "invalid_character",
    "event_too_large",
)
REFUSAL_CODES = _CODES[1:]  # every code an event can be refused with
_CODE_ID = {code: i for i, code in enumerate(_CODES)}
_FIELD_NAMES = (None, *FIELDS)
_FIELD_ID = {name: i for i, name in enumerate(_FIELD_NAMES)}


class Refusals:
    def __init__(self, n: int) -> None:
        self.code = np.zeros(n, dtype=np.uint8)
        self.field = np.zeros(n, dtype=np.uint8)
        self.detail: dict[int, str] = {}

    def mark(self, mask: np.ndarray | pa.Array, field_name: str | None, code: str) -> None:
        if isinstance(mask, pa.Array | pa.ChunkedArray):
            mask = _np_mask(mask)
        new = mask & (self.code == 0)
        self.code[new] = _CODE_ID[code]
        self.field[new] = _FIELD_ID[field_name]

    def mark_row(
        self, index: int, field_name: str | None, code: str, detail: str | None = None
    ) -> None:
        if self.code[index] == 0:
            self.code[index] = _CODE_ID[code]
            self.field[index] = _FIELD_ID[field_name]
            if detail is not None:
                self.detail[index] = detail

    def ok(self) -> np.ndarray:
        result: np.ndarray = np.equal(self.code, 0)
        return result


def _np_mask(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow boolean column as a NumPy mask, nulls counting as False."""
    result: np.ndarray = np.asarray(
        pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool
    )
    return result


def _message(code: str, field_name: str | None, limits: Limits) -> str:
    if code == "required":
        return f"{field_name} is required"
    if code == "invalid_type":
        return {
            "event_id": "event_id must be a string holding a UUID",
            "occurred_at": "occurred_at must be an ISO-8601 date-time string",
            "user_id": "user_id must be a non-empty string or an integer",
            "event_type": "event_type must be a string",
            "properties": "properties must be a JSON object",
            "properties_json": "properties_json must be a string holding a JSON object",
        }.get(field_name or "", "wrong type")
    return {
        "not_an_object": "each event must be a JSON object",
        "invalid_uuid": "event_id must be a UUID such as 123e4567-e89b-42d3-a456-426614174000 "
        "(not the nil or max UUID)",
        "invalid_timestamp": "occurred_at must be an ISO-8601 date-time such as "
        "2025-08-21T06:52:34+03:00 (no offset means UTC)",
        "too_early": f"occurred_at is before {limits.min_occurred_at.isoformat()}",
        "too_far_in_future": "occurred_at is more than "
        f"{int(limits.max_future.total_seconds())} s in the future",
        "empty": f"{field_name} must not be empty",
        "too_long": f"{field_name} is longer than "
        f"{limits.max_user_id_length if field_name == 'user_id' else limits.max_event_type_length}"
        " characters",
        "invalid_character": f"{field_name} contains a NUL character (\\u0000)",
        "event_too_large": f"the event is larger than {limits.max_event_bytes} bytes",
        "invalid_json": "not valid JSON",
    }.get(code, code)


# ---------------------------------------------------------------------------------------
# Column checks shared by every body format.


def event_id_column(raw: pa.Array, refusals: Refusals) -> pa.Array:
    """event_id (string, 16-byte binary or dictionary of those) -> binary(16) with nulls."""
    refusals.mark(pc.is_null(raw), "event_id", "required")
    if pa.types.is_fixed_size_binary(raw.type) and raw.type.byte_width == 16:
        ids = raw
    elif pa.types.is_binary(raw.type) or pa.types.is_large_binary(raw.type):
        good_len = pc.equal(pc.binary_length(raw), 16)
        refusals.mark(pc.invert(good_len), "event_id", "invalid_uuid")
        ids = pc.if_else(good_len, raw, pa.scalar(None, raw.type)).cast(pa.binary(16))
    else:  # strings
        canonical = _canonical_uuids(raw)
        if canonical is not None:
            ids = canonical
        else:
            valid = pc.match_substring_regex(raw, _UUID_RE)
            refusals.mark(pc.invert(valid), "event_id", "invalid_uuid")
            hexes = pc.replace_substring(pc.if_else(valid, raw, pa.scalar(None, raw.type)), "-", "")
            decoded = pl.from_arrow(hexes).cast(pl.String).str.decode("hex")  # type: ignore[union-attr]
            ids = decoded.to_arrow().cast(pa.binary(16))
    refusals.mark(pc.is_in(ids, _NIL_UUIDS), "event_id", "invalid_uuid")
    return ids


# ASCII -> hex digit value, 255 for anything that is not a hex digit.
_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
_HEX_POSITIONS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def _canonical_uuids(raw: pa.Array) -> pa.Array | None:
    """PERF: every value written 8-4-4-4-12 (the usual case): decoded with NumPy on the
    string buffer in one pass. None when any value is null or written otherwise."""
    n = len(raw)
    if n == 0 or raw.null_count:
        return None
    _, offsets, data = raw.buffers()
    ends = np.frombuffer(offsets, dtype=np.int32, count=n + 1, offset=raw.offset * 4)
    if ends[-1] - ends[0] != 36 * n or not np.all(np.diff(ends) == 36):
        return None
    chars = np.frombuffer(data, dtype=np.uint8, count=36 * n, offset=int(ends[0])).reshape(n, 36)
    if not (chars[:, [8, 13, 18, 23]] == ord("-")).all():
        return None
    digits = _HEX[chars[:, _HEX_POSITIONS]]
    if (digits == 255).any():
        return None
    packed = (digits[:, 0::2] << 4) | digits[:, 1::2]
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), n, [None, pa.py_buffer(packed.tobytes())]
    )


# The parts of a normalised ISO-8601 text (upper case, "." before the fraction, at most six
# fraction digits, an offset or Z always present).
_PARTS_RE = (
    r"^(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[T ](?P<hour>\d{2})"
    r"(?::(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,6}))?)?)?"
    r"(?:Z|(?P<sign>[+-])(?P<offset_hours>\d{2})(?::?(?P<offset_minutes>\d{2}))?)$"
)
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _part(parts: pa.StructArray, name: str, *, pad: int = 0) -> np.ndarray:
    """One extracted part as integers (0 where it is absent or the row did not match)."""
    text = pc.fill_null(parts.field(name), "")
    if pad:
        text = pc.utf8_rpad(text, pad, "0")  # a fraction: .5 is 500000 microseconds
    text = pc.if_else(pc.equal(text, ""), "0", text)
    return np.asarray(text.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _parse_timestamps(strings: pa.Array) -> pa.Array:
    """Normalised ISO-8601 strings -> timestamp[us, UTC]; impossible ones become null.

    PERF: the parts are taken apart by one regular expression and checked and combined
    with NumPy, so a column full of impossible dates (2025-02-30, 24:00) costs O(n) like a
    valid one; Arrow's own cast refuses a whole column for one bad value. Accepts what that
    cast accepts (the tests compare both).
    """
    parts = pc.extract_regex(strings, _PARTS_RE)
    matched = _np_mask(pc.is_valid(parts))
    year, month, day = _part(parts, "year"), _part(parts, "month"), _part(parts, "day")
    hour, minute, second = _part(parts, "hour"), _part(parts, "minute"), _part(parts, "second")
    micro = _part(parts, "fraction", pad=6)
    offset = _part(parts, "offset_hours") * 60 + _part(parts, "offset_minutes")
    sign = np.where(_np_mask(pc.equal(parts.field("sign"), "-")), -1, 1)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _DAYS_IN_MONTH[np.clip(month, 0, 12)] + ((month == 2) & leap)
    valid = (
        matched
        & (month >= 1)
        & (month <= 12)
        & (day >= 1)
        & (day <= month_days)
        & (hour <= 23)
        & (minute <= 59)
        & (second <= 59)
        & (_part(parts, "offset_hours") <= 23)
        & (_part(parts, "offset_minutes") <= 59)
    )
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146_097 + doe - 719_468
    seconds = ((days * 24 + hour) * 60 + minute) * 60 + second - sign * offset * 60
    micros = np.where(valid, seconds * 1_000_000 + micro, 0)
    return pa.array(micros, pa.int64(), mask=~valid).cast(pa.timestamp("us", tz="UTC"))


# Years 1 to 9999, in microseconds since the epoch: what PostgreSQL and Python both hold.
_MIN_US = -62_135_596_800_000_000
_MAX_US = 253_402_300_799_999_999
_PER_UNIT_US = {"s": 1_000_000, "ms": 1_000, "us": 1}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _to_micros(raw: pa.Array, refusals: Refusals) -> pa.Array:
    """An Arrow timestamp column (any unit; no time zone means UTC) as timestamp[us, UTC].

    Checked arithmetic only: a value outside years 1-9999 is refused, never wrapped around;
    nanoseconds are floored to microseconds.
    """
    ticks = raw.cast(pa.int64())
    if raw.type.unit == "ns":
        floor_fix = pc.if_else(pc.less(ticks, 0), 999, 0)
        micros = pc.divide(pc.subtract(ticks, floor_fix), 1000)
    else:
        factor = _PER_UNIT_US[raw.type.unit]
        outside = pc.or_(pc.less(ticks, _MIN_US // factor), pc.greater(ticks, _MAX_US // factor))
        refusals.mark(outside, "occurred_at", "invalid_timestamp")
        micros = pc.multiply_checked(
            pc.if_else(outside, pa.scalar(None, pa.int64()), ticks), factor
        )
    return micros.cast(pa.timestamp("us", tz="UTC"))


def _plain_iso(raw: pa.Array) -> pa.Array | None:
    """PERF: every value already ISO-8601 with an offset (the usual case) and one Arrow
    cast parses them all; None sends the column through normalisation."""
    if raw.null_count:
        return None
    try:
        stamps = raw.cast(pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    # Arrow's parser also takes a few forms the documented format does not (a bare hour).
    if not pc.all(pc.match_substring_regex(raw, _TIMESTAMP_RE)).as_py():
        return None
    return stamps


def timestamp_column(raw: pa.Array, refusals: Refusals, limits: Limits, now: datetime) -> pa.Array:
    """occurred_at (ISO-8601 string or Arrow timestamp) -> timestamp[us, UTC] with nulls."""
    target = pa.timestamp("us", tz="UTC")
    refusals.mark(pc.is_null(raw), "occurred_at", "required")
    if pa.types.is_timestamp(raw.type):
        stamps = _to_micros(raw, refusals)
    elif (plain := _plain_iso(raw)) is not None:
        stamps = plain
    else:
        shaped = pc.match_substring_regex(raw, _TIMESTAMP_RE)
        refusals.mark(pc.invert(shaped), "occurred_at", "invalid_timestamp")
        text = pc.utf8_upper(pc.if_else(shaped, raw, pa.scalar(None, raw.type)))
        text = pc.replace_substring(text, ",", ".")
        text = pc.replace_substring_regex(text, r"(\.\d{6})\d+", r"\1")
        has_offset = pc.match_substring_regex(text, _HAS_OFFSET_RE)
        text = pc.if_else(has_offset, text, pc.binary_join_element_wise(text, "Z", ""))
        stamps = _parse_timestamps(text)
        refusals.mark(pc.and_(shaped, pc.is_null(stamps)), "occurred_at", "invalid_timestamp")
    refusals.mark(
        pc.less(stamps, pa.scalar(limits.min_occurred_at, target)), "occurred_at", "too_early"
    )
    # In microseconds and capped at the end of year 9999: with a large allowance
    # (EVENTS_MAX_FUTURE_SECONDS) now + allowance is past what a datetime holds, and the
    # stored value must stay within what PostgreSQL and Python both read back.
    now_us = (now.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    allowance_us = limits.max_future // timedelta(microseconds=1)
    latest = pa.scalar(min(now_us + allowance_us, _MAX_US), target)
    refusals.mark(pc.greater(stamps, latest), "occurred_at", "too_far_in_future")
    return stamps


def text_column(raw: pa.Array, name: str, max_length: int, refusals: Refusals) -> pa.Array:
    """user_id / event_type: required, not blank, not too long, no NUL."""
    refusals.mark(pc.is_null(raw), name, "required")
    refusals.mark(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(raw)), 0), name, "empty")
    refusals.mark(pc.greater(pc.utf8_length(raw), max_length), name, "too_long")
    refusals.mark(pc.match_substring(raw, "\x00"), name, "invalid_character")
    return raw


def finish(
    n: int,
    refusals: Refusals,
    columns: dict[str, pa.Array],
    limits: Limits,
    describe: Describer,
) -> ValidatedBatch:
    props = columns["properties"]
    refusals.mark(pc.match_substring_regex(props, _JSON_NUL_RE), "properties", "invalid_character")
    size = pc.add(
        pc.add(pc.binary_length(props), pc.binary_length(columns["user_id"])),
        pc.add(pc.binary_length(columns["event_type"]), 24),
    )
    refusals.mark(pc.greater(size, limits.max_event_bytes), None, "event_too_large")

    ok = refusals.ok()
    table = pa.Table.from_arrays([columns[f.name] for f in EVENT_SCHEMA], names=EVENT_SCHEMA.names)
    if not ok.all():
        table = table.filter(pa.array(ok))
    table = table.cast(EVENT_SCHEMA)
    rejected = [
        Rejection(
            index=int(i),
            event_id=describe.event_id(int(i)),
            field=_FIELD_NAMES[refusals.field[i]],
            code=_CODES[refusals.code[i]],
            message=refusals.detail.get(
                int(i), _message(_CODES[refusals.code[i]], _FIELD_NAMES[refusals.field[i]], limits)
            ),
            line=describe.line(int(i)),
        )
        for i in np.flatnonzero(~ok)
    ]
    return ValidatedBatch(table=table, received=n, rejected=rejected)


class Describer:
    """Turns a refused row back into what the client sent (only called for refused rows)."""

    def __init__(self, event_ids: Sequence[Any] | pa.Array, lines: Lines | None) -> None:
        self._event_ids = event_ids
        self._lines = lines

    def event_id(self, i: int) -> str | None:
        value = self._event_ids[i]
        if isinstance(value, pa.Scalar):
            value = value.as_py()
        if isinstance(value, bytes) and len(value) == 16:
            return _uuid_text(value)
        if isinstance(value, str):
            return value[:100]
        return None

    def line(self, i: int) -> int | None:
        return None if self._lines is None else int(self._lines[i])


def _uuid_text(value: bytes) -> str:
    h = value.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# ---------------------------------------------------------------------------------------
# Records decoded from JSON / NDJSON.

_MISSING: dict[str, Any] = {}


def _strings(values: list[Any], name: str, refusals: Refusals) -> pa.Array:
    """A list of decoded JSON values as a string column; non-strings are refused."""
    try:
        # PERF: the common case (all strings or missing) is a single C-level conversion.
        return pa.array(values, type=pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    bad = np.fromiter((v is not None and type(v) is not str for v in values), bool, len(values))
    refusals.mark(bad, name, "invalid_type")
    return pa.array([v if type(v) is str else None for v in values], type=pa.string())


def _user_ids(values: list[Any], refusals: Refusals) -> pa.Array:
    """user_id: a string, or an integer stored as its decimal text (booleans are refused)."""
    try:
        return pa.array(values, type=pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    bad = np.fromiter(
        (v is not None and type(v) is not str and type(v) is not int for v in values),
        bool,
        len(values),
    )
    refusals.mark(bad, "user_id", "invalid_type")
    return pa.array(
        [v if type(v) is str else str(v) if type(v) is int else None for v in values],
        type=pa.string(),
    )


EMPTY_OBJECT = b"{}"


def _properties(rows: list[dict[str, Any]], refusals: Refusals, limits: Limits) -> pa.Array:
    """properties (object) or properties_json (string holding an object) -> JSON text.

    PERF: every text is appended to one buffer as soon as it is encoded, and the column is
    made from that buffer and the offsets: a list of one bytes object per event would keep
    each in its own allocation (orjson's output buffer, about 4 KiB whatever the text), 8x
    the memory of the text (a 32 MiB body peaked at +577 MB that way, +209 MB this way).
    """
    dumps = orjson.dumps
    props = [r.get("properties") for r in rows]
    data = bytearray()
    ends = array("i", [0])
    end = ends.append
    if all(type(p) is dict for p in props):
        for p in props:  # the common case: one C-level dumps per event and nothing else
            data += dumps(p)
            end(len(data))
        return _text_column(len(props), ends, data)
    for i, (p, row) in enumerate(zip(props, rows, strict=True)):
        if type(p) is dict:
            data += dumps(p)
        elif p is not None:
            refusals.mark_row(i, "properties", "invalid_type")
            data += EMPTY_OBJECT
        elif (pj := row.get("properties_json")) is None:
            data += EMPTY_OBJECT
        elif type(pj) is not str:
            refusals.mark_row(i, "properties_json", "invalid_type")
            data += EMPTY_OBJECT
        else:
            data += json_object_text(pj.encode(), i, "properties_json", refusals, limits)
        end(len(data))
    return _text_column(len(props), ends, data)


def _text_column(n: int, ends: array[int], data: bytearray) -> pa.Array:
    """A string column from its UTF-8 data and offsets (orjson writes valid UTF-8)."""
    if len(data) >= 1 << 31:
        raise TooLarge("properties are larger than 2 GiB")  # never with the body limit
    return pa.StringArray.from_buffers(n, pa.py_buffer(ends), pa.py_buffer(data))


def json_object_text(text: bytes, i: int, name: str, refusals: Refusals, limits: Limits) -> bytes:
    """One JSON text holding an object, re-encoded by orjson; the row is refused otherwise.

    Re-encoding (rather than keeping the text as sent) gives every body format the same
    stored form and keeps out what orjson reads but PostgreSQL's jsonb refuses (numbers
    such as 1e-16384, whose exponent numeric cannot hold). A text longer than an event may
    be is refused unread: decoding it could build millions of objects.
    """
    if not text.strip():
        return EMPTY_OBJECT
    if len(text) > _max_text(limits):
        refusals.mark_row(i, None, "event_too_large")
        return EMPTY_OBJECT
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as ex:
        refusals.mark_row(i, name, "invalid_json", f"{name} is not valid JSON: {ex}")
        return EMPTY_OBJECT
    if type(value) is not dict:
        refusals.mark_row(i, name, "invalid_type", f"{name} must hold a JSON object")
        return EMPTY_OBJECT
    return orjson.dumps(value)


# A number whose exponent has four digits or more: PostgreSQL's numeric refuses exponents
# beyond -16383 / +131071 while orjson reads such numbers (as 0.0). Texts that contain one
# are re-encoded; all others are stored as sent.
_BIG_EXPONENT_RE = r"[eE][+-]?[0-9]{4,}"


def _max_text(limits: Limits) -> int:
    """The longest JSON text worth parsing: a text stored as sent is refused beyond
    ``max_event_bytes`` anyway; one that is re-encoded may shrink (whitespace, escapes such
    as ``\u00e9``), by a factor six at most for escapes, so longer is surely too large."""
    return 6 * limits.max_event_bytes


def json_object_column(raw: pa.Array, name: str, refusals: Refusals, limits: Limits) -> pa.Array:
    """A column of JSON texts that must each hold an object (null or blank means ``{}``).

    PERF: each text is parsed once to check it (the JSON decode of the Arrow and CSV
    paths) but kept as sent, without re-encoding every row: building a new bytes object per
    row costs several times the parse itself. A text larger than an event may be is
    refused without parsing it (decoding one could build millions of objects).
    """
    lengths = pc.binary_length(raw)
    oversized = _np_mask(pc.greater(lengths, limits.max_event_bytes))
    if oversized.any():
        refusals.mark(oversized, None, "event_too_large")
        raw = pc.if_else(pa.array(oversized), pa.scalar(None, raw.type), raw)
    texts = raw.cast(pa.binary()).to_pylist()
    risky = set(np.flatnonzero(_np_mask(pc.match_substring_regex(raw, _BIG_EXPONENT_RE))))
    replaced: dict[int, bytes] = {}
    loads = orjson.loads
    for i, text in enumerate(texts):
        if text is None or not text.strip():
            replaced[i] = EMPTY_OBJECT
            continue
        try:
            value = loads(text)
        except orjson.JSONDecodeError as ex:
            refusals.mark_row(i, name, "invalid_json", f"{name} is not valid JSON: {ex}")
            replaced[i] = EMPTY_OBJECT
            continue
        if type(value) is not dict:
            refusals.mark_row(i, name, "invalid_type", f"{name} must hold a JSON object")
            replaced[i] = EMPTY_OBJECT
        elif i in risky:
            replaced[i] = orjson.dumps(value)
    column = raw.cast(pa.string())
    if not replaced:
        return column
    mask = np.zeros(len(texts), dtype=bool)
    order = sorted(replaced)
    mask[order] = True
    values = pa.array([replaced[i] for i in order], pa.binary()).cast(pa.string())
    return pc.replace_with_mask(column, pa.array(mask), values)


def validate_records(
    items: list[Any],
    limits: Limits,
    now: datetime,
    *,
    lines: Lines | None = None,
    pre_refused: dict[int, tuple[str, str]] | None = None,
) -> ValidatedBatch:
    """Validate decoded JSON values (one per event).

    ``pre_refused`` maps an index to ``(code, message)`` for items the decoder already
    refused (a malformed NDJSON line); ``lines`` gives NDJSON line numbers for the answer.
    """
    n = len(items)
    refusals = Refusals(n)
    for i, (code, message) in (pre_refused or {}).items():
        refusals.mark_row(i, None, code, message)
    rows: list[dict[str, Any]]
    if all(type(x) is dict for x in items):
        rows = items
    else:
        rows = []
        for i, x in enumerate(items):
            if type(x) is dict:
                rows.append(x)
            else:
                rows.append(_MISSING)
                refusals.mark_row(i, None, "not_an_object")
    # PERF: one pass per field to pull the values out; everything after is column-wise.
    raw_ids = [r.get("event_id") for r in rows]
    columns = {
        "event_id": event_id_column(_strings(raw_ids, "event_id", refusals), refusals),
        "occurred_at": timestamp_column(
            _strings([r.get("occurred_at") for r in rows], "occurred_at", refusals),
            refusals,
            limits,
            now,
        ),
        "user_id": text_column(
            _user_ids([r.get("user_id") for r in rows], refusals),
            "user_id",
            limits.max_user_id_length,
            refusals,
        ),
        "event_type": text_column(
            _strings([r.get("event_type") for r in rows], "event_type", refusals),
            "event_type",
            limits.max_event_type_length,
            refusals,
        ),
        "properties": _properties(rows, refusals, limits),
    }
    return finish(n, refusals, columns, limits, Describer(raw_ids, lines))
