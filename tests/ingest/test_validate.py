"""Decoding and validation of every body format, without servers."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pytest

from core.codes import Refusal
from ingest.media import ARROW, JSON, NDJSON, decode_batch, media_type
from ingest.validate import Limits, ValidatedBatch, validate_records
from tests import sample
from tests.conftest import new_event

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits()


def decode(media: str, body: bytes, **kw: Any) -> ValidatedBatch:
    return decode_batch(
        media,
        body,
        limits=kw.get("limits", LIMITS),
        now=kw.get("now", NOW),
        max_events=kw.get("max_events", 50_000),
        max_bytes=1 << 25,
    )


def refused(batch: ValidatedBatch) -> dict[int, tuple[str | None, str]]:
    return {r.index: (r.field, r.code) for r in batch.rejected}


@pytest.mark.parametrize(
    ("media", "body"),
    [(JSON, sample.json_body), (NDJSON, sample.ndjson_body), (ARROW, sample.arrow_body)],
    ids=["json", "ndjson", "arrow"],
)
def test_sample_decodes_to_the_same_values_in_every_format(media: str, body: Any) -> None:
    batch = decode(media, body())
    assert batch.received == 5000
    assert batch.accepted == 5000
    assert batch.rejected == []
    expected = sample.expected_rows()
    got = batch.table.to_pylist()
    assert len(got) == 5000
    for row in got:
        occurred_at, user_id, event_type, properties = expected[uuid.UUID(bytes=row["event_id"])]
        assert row["occurred_at"] == occurred_at  # +03:00 normalised to UTC
        assert row["user_id"] == user_id
        assert row["event_type"] == event_type
        assert json.loads(row["properties"]) == properties


def test_json_body_may_wrap_events_in_an_object() -> None:
    events = [new_event(), new_event()]
    batch = decode(JSON, orjson.dumps({"events": events, "sent_at": "whatever"}))
    assert batch.accepted == 2


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"events": 5}', "invalid_body"),
        (b'"hello"', "invalid_body"),
        (b"[1, 2", "invalid_json"),
        (b"", "invalid_json"),
        (b"[]", "empty_batch"),
    ],
)
def test_json_body_errors(body: bytes, code: str) -> None:
    with pytest.raises(Refusal) as info:
        decode(JSON, body)
    assert info.value.code == code
    assert info.value.status == 400


def test_too_many_events_is_413() -> None:
    with pytest.raises(Refusal) as info:
        decode(JSON, orjson.dumps([new_event() for _ in range(3)]), max_events=2)
    assert (info.value.status, info.value.code) == (413, "too_many_events")


def test_each_bad_field_refuses_only_its_event() -> None:
    good = new_event()
    events: list[Any] = [
        good,
        new_event(event_id="not-a-uuid"),
        new_event(event_id="00000000-0000-0000-0000-000000000000"),
        new_event(event_id=123),
        new_event(occurred_at="2025-02-30T00:00:00Z"),
        new_event(occurred_at="yesterday"),
        new_event(occurred_at=1735689600),
        new_event(user_id=""),
        new_event(user_id=True),
        new_event(user_id=1.5),
        new_event(event_type="   "),
        new_event(event_type=None),
        new_event(properties=[1, 2]),
        new_event(properties={"k": "nul\u0000"}),
        "not an object",
        {k: v for k, v in new_event().items() if k != "user_id"},
        new_event(user_id="u\u0000"),
        new_event(event_type="x" * 129),
    ]
    batch = validate_records(events, LIMITS, NOW)
    assert batch.accepted == 1
    assert batch.table.column("event_id").to_pylist() == [uuid.UUID(good["event_id"]).bytes]
    assert refused(batch) == {
        1: ("event_id", "invalid_uuid"),
        2: ("event_id", "invalid_uuid"),
        3: ("event_id", "invalid_type"),
        4: ("occurred_at", "invalid_timestamp"),
        5: ("occurred_at", "invalid_timestamp"),
        6: ("occurred_at", "invalid_type"),
        7: ("user_id", "empty"),
        8: ("user_id", "invalid_type"),
        9: ("user_id", "invalid_type"),
        10: ("event_type", "empty"),
        11: ("event_type", "required"),
        12: ("properties", "invalid_type"),
        13: ("properties", "invalid_character"),
        14: (None, "not_an_object"),
        15: ("user_id", "required"),
        16: ("user_id", "invalid_character"),
        17: ("event_type", "too_long"),
    }
    by_index = {r.index: r for r in batch.rejected}
    assert by_index[1].event_id == "not-a-uuid"
    assert by_index[3].event_id is None
    assert all(r.message for r in batch.rejected)


def test_timestamps_in_many_iso_forms_normalise_to_utc() -> None:
    forms = {
        "2025-08-21T06:52:34+03:00": datetime(2025, 8, 21, 3, 52, 34, tzinfo=UTC),
        "2025-08-21T06:52:34Z": datetime(2025, 8, 21, 6, 52, 34, tzinfo=UTC),
        "2025-08-21T06:52:34z": datetime(2025, 8, 21, 6, 52, 34, tzinfo=UTC),
        "2025-08-21T06:52:34": datetime(2025, 8, 21, 6, 52, 34, tzinfo=UTC),  # no offset: UTC
        "2025-08-21 06:52:34-05:30": datetime(2025, 8, 21, 12, 22, 34, tzinfo=UTC),
        "2025-08-21T06:52:34.123456789+00:00": datetime(2025, 8, 21, 6, 52, 34, 123456, tzinfo=UTC),
        "2025-08-21T06:52:34,5+0100": datetime(2025, 8, 21, 5, 52, 34, 500000, tzinfo=UTC),
        "2025-08-21T06:52Z": datetime(2025, 8, 21, 6, 52, tzinfo=UTC),
    }
    events = [new_event(occurred_at=text) for text in forms]
    batch = validate_records(events, LIMITS, NOW)
    assert batch.rejected == []
    assert batch.table.column("occurred_at").to_pylist() == list(forms.values())


def test_time_bounds() -> None:
    limits = Limits(max_future=timedelta(hours=1), min_occurred_at=datetime(2000, 1, 1, tzinfo=UTC))
    events = [
        new_event(occurred_at="2026-01-01T12:59:59Z"),  # within the hour
        new_event(occurred_at="2026-01-01T13:00:01Z"),
        new_event(occurred_at="1999-12-31T23:59:59Z"),
    ]
    batch = validate_records(events, limits, NOW)
    assert refused(batch) == {
        1: ("occurred_at", "too_far_in_future"),
        2: ("occurred_at", "too_early"),
    }


def test_a_future_allowance_past_year_9999_caps_there_instead_of_failing() -> None:
    """Found by the schemathesis run: with EVENTS_MAX_FUTURE_SECONDS of ten thousand years
    every POST /events was a 500 (OverflowError adding it to now). The bound is now capped
    at the last microsecond of 9999 (UTC), the most PostgreSQL and Python both read back."""
    limits = Limits(
        max_future=timedelta(days=3_652_500), min_occurred_at=datetime.min.replace(tzinfo=UTC)
    )
    events = [
        new_event(occurred_at="9999-12-31T23:59:59.999999Z"),
        new_event(occurred_at="0001-01-01T00:00:00Z"),
        new_event(occurred_at="9999-12-31T23:59:59-00:01"),  # 10000-01-01 in UTC
        new_event(occurred_at="0001-01-01T00:00:00+00:01"),  # year 0 in UTC
    ]
    batch = validate_records(events, limits, NOW)
    assert refused(batch) == {
        2: ("occurred_at", "too_far_in_future"),
        3: ("occurred_at", "too_early"),
    }
    assert batch.table.column("occurred_at").to_pylist() == [
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
    ]


def test_uuid_forms_and_user_id_integers() -> None:
    raw = uuid.uuid4()
    events = [
        new_event(event_id=str(raw).upper(), user_id=42),
        new_event(event_id=raw.hex, user_id=-7),
    ]
    batch = validate_records(events, LIMITS, NOW)
    assert batch.rejected == []
    assert batch.table.column("event_id").to_pylist() == [raw.bytes, raw.bytes]
    assert batch.table.column("user_id").to_pylist() == ["42", "-7"]


def test_properties_json_string_is_accepted_and_checked() -> None:
    events = [
        new_event(properties=None, properties_json='{"a": [1, 2]}'),
        {k: v for k, v in new_event(properties_json='{"b": 1}').items() if k != "properties"},
        {k: v for k, v in new_event(properties_json="[1]").items() if k != "properties"},
        {k: v for k, v in new_event(properties_json="{oops").items() if k != "properties"},
        {k: v for k, v in new_event().items() if k != "properties"},
    ]
    batch = validate_records(events, LIMITS, NOW)
    assert refused(batch) == {
        2: ("properties_json", "invalid_type"),
        3: ("properties_json", "invalid_json"),
    }
    assert [json.loads(p) for p in batch.table.column("properties").to_pylist()] == [
        {"a": [1, 2]},
        {"b": 1},
        {},
    ]


def test_event_size_limit_refuses_only_the_large_event() -> None:
    limits = Limits(max_event_bytes=200)
    events = [new_event(), new_event(properties={"blob": "x" * 300})]
    batch = validate_records(events, limits, NOW)
    assert refused(batch) == {1: (None, "event_too_large")}


def test_unknown_fields_are_ignored() -> None:
    batch = validate_records([new_event(extra={"nested": True}, sent_at="now")], LIMITS, NOW)
    assert batch.accepted == 1
    assert batch.table.column_names == [
        "event_id",
        "occurred_at",
        "user_id",
        "event_type",
        "properties",
    ]


def test_ndjson_refuses_only_malformed_lines_and_skips_blank_ones() -> None:
    good1, good2 = new_event(), new_event()
    body = b"\r\n".join(
        [
            orjson.dumps(good1),
            b"",
            b"{not json",
            b"   ",
            b"[1, 2]",
            orjson.dumps(good2),
        ]
    )
    batch = decode(NDJSON, body)
    assert batch.received == 4
    assert batch.accepted == 2
    assert {(r.index, r.line, r.code) for r in batch.rejected} == {
        (1, 3, "invalid_json"),
        (2, 5, "not_an_object"),
    }


def _arrow(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def test_arrow_with_string_columns_struct_properties_and_naive_timestamps() -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    table = pa.table(
        {
            "event_id": pa.array(ids),
            "occurred_at": pa.array(
                [datetime(2025, 1, 1, 10, 0), None, datetime(2025, 1, 2)], pa.timestamp("ns")
            ),
            "user_id": pa.array(["a", "b", "c"]).cast(pa.large_string()),
            "event_type": pa.array(["x", "y", "z"]),
            "properties": pa.array([{"country": "UA", "n": 1}, None, {"country": None, "n": 2}]),
        }
    )
    batch = decode(ARROW, _arrow(table))
    assert refused(batch) == {1: ("occurred_at", "required")}
    rows = batch.table.to_pylist()
    assert [r["occurred_at"] for r in rows] == [
        datetime(2025, 1, 1, 10, tzinfo=UTC),
        datetime(2025, 1, 2, tzinfo=UTC),
    ]
    assert [json.loads(r["properties"]) for r in rows] == [
        {"country": "UA", "n": 1},
        {"country": None, "n": 2},
    ]


def test_arrow_json_text_properties_are_validated_per_row() -> None:
    table = pa.table(
        {
            "event_id": pa.array([uuid.uuid4().bytes for _ in range(3)], pa.binary(16)),
            "occurred_at": pa.array(["2025-01-01T00:00:00Z"] * 3),
            "user_id": pa.array([1, 2, 3], pa.int32()),
            "event_type": pa.array(["x"] * 3),
            "properties": pa.array(['{"a":1}', "{broken", '{"s":"\\u0000"}']),
        }
    )
    batch = decode(ARROW, _arrow(table))
    assert refused(batch) == {
        1: ("properties", "invalid_json"),
        2: ("properties", "invalid_character"),
    }
    assert batch.table.column("user_id").to_pylist() == ["1"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"event_id": pa.array(["x"])}, "missing column"),
        (
            {
                "event_id": pa.array([1.5]),
                "occurred_at": pa.array(["2025-01-01T00:00:00Z"]),
                "user_id": pa.array(["u"]),
                "event_type": pa.array(["t"]),
            },
            "event_id must be",
        ),
        (
            {
                "event_id": pa.array([str(uuid.uuid4())]),
                "occurred_at": pa.array([1.0]),
                "user_id": pa.array(["u"]),
                "event_type": pa.array(["t"]),
            },
            "occurred_at must be",
        ),
    ],
)
def test_arrow_schema_errors_refuse_the_request(columns: dict[str, pa.Array], message: str) -> None:
    with pytest.raises(Refusal) as info:
        decode(ARROW, _arrow(pa.table(columns)))
    assert info.value.status == 400
    assert info.value.code == "invalid_arrow_schema"
    assert message in info.value.message


def test_not_arrow_is_a_400() -> None:
    with pytest.raises(Refusal) as info:
        decode(ARROW, gzip.compress(b"hello"))
    assert (info.value.status, info.value.code) == (400, "invalid_arrow")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, JSON),
        ("application/json; charset=utf-8", JSON),
        ("application/x-ndjson", NDJSON),
        ("application/jsonl", NDJSON),
        ("Application/Vnd.Apache.Arrow.Stream", ARROW),
    ],
)
def test_media_types(header: str | None, expected: str) -> None:
    assert media_type(header) == expected


def test_unknown_media_type_is_415() -> None:
    with pytest.raises(Refusal) as info:
        media_type("text/csv")
    assert (info.value.status, info.value.code) == (415, "unsupported_media_type")
