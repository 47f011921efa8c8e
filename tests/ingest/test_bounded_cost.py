"""Every hostile body is refused at about the cost of reading it.

The attacks of ``bench/attacks.py`` (small bodies that expand, large ones that are cheap to
send) are decoded in a fresh process whose peak RSS is reset before each one, and must be
refused with their 4xx while the peak grows by less than 256 MB. The counting that makes
this possible (``ingest/json_shape.py``, ``ingest/arrow_size.py``, the vectorised timestamp
parser) is checked against independent references.
"""

from __future__ import annotations

import gc
import multiprocessing
import random
import string
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import attacks
from ingest import json_shape
from ingest.arrow_size import json_bytes
from ingest.validate import _parse_timestamps

MB = 1 << 20
NOW = datetime(2026, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------------------
# The attacks, each in a process of its own measuring.


def _peak_rss_mb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


def _reset_peak() -> None:
    # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM).
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _decode_each(names: list[str]) -> list[dict[str, Any]]:
    """Runs in a fresh process: every attack decoded as the API does, with its cost."""
    from core.codes import ErrorCode, Refusal
    from ingest.body import decode_content
    from ingest.media import decode_batch
    from ingest.validate import Limits
    from ingest.vendors.decode import decode_vendor, key_digest

    results = []
    for name in names:
        attack = getattr(attacks, name)()
        gc.collect()
        _reset_peak()
        before = _peak_rss_mb()
        outcome: dict[str, Any] = {"name": name}
        try:
            body = decode_content(
                attack.body, attack.headers.get("Content-Encoding"), 32 * MB, max_ratio=200
            )
            if attack.route is None:
                batch = decode_batch(
                    attack.content_type,
                    body,
                    limits=Limits(),
                    now=NOW,
                    max_events=50_000,
                    max_bytes=32 * MB,
                )
            else:
                # A key in the body is looked up among the service's (one, here).
                key_ids = (
                    {key_digest("the-key"): "key_1"} if attack.headers == attacks.BODY_KEY else None
                )
                found = decode_vendor(
                    attack.route,
                    body,
                    limits=Limits(),
                    now=NOW,
                    max_events=50_000,
                    max_values=1_000_000,
                    key_ids=key_ids,
                )
                if found.batch is None:
                    raise Refusal(ErrorCode.UNAUTHORIZED, "unknown key")
                batch = found.batch
            outcome.update(
                status=400 if batch.accepted == 0 else 202,
                codes=sorted({r.code for r in batch.rejected}),
                received=batch.received,
            )
            del batch
        except Refusal as ex:
            outcome.update(status=ex.status, codes=[ex.code])
        outcome["growth_mb"] = _peak_rss_mb() - before
        del attack
        results.append(outcome)
    return results


@pytest.fixture(scope="module")
def attack_results() -> dict[str, dict[str, Any]]:
    names = [make.__name__ for make in (*attacks.ATTACKS, *attacks.VENDOR_ATTACKS)]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return {r["name"]: r for r in pool.apply(_decode_each, (names,))}


@pytest.mark.parametrize(
    "make", (*attacks.ATTACKS, *attacks.VENDOR_ATTACKS), ids=lambda make: make.__name__
)
def test_each_attack_is_refused_with_bounded_memory(
    attack_results: dict[str, dict[str, Any]], make: Any
) -> None:
    attack = make()
    result = attack_results[make.__name__]
    assert result["status"] == attack.status, result
    assert result["codes"] == [attack.code], result
    assert result["growth_mb"] < 256, result


def test_impossible_dates_are_each_refused(attack_results: dict[str, dict[str, Any]]) -> None:
    result = attack_results["json_impossible_dates"]
    assert result["received"] == 50_000
    assert result["codes"] == ["invalid_timestamp"]


# ---------------------------------------------------------------------------------------
# Counting JSON from its bytes.


def _reference(body: bytes, *, lines: bool, depth: int) -> tuple[int, int]:
    """Character by character: (separators at ``depth`` + 1, values). A backslash escapes
    the next character inside strings and out (outside one it is invalid JSON anyway)."""
    inside = escaped = False
    level = values = commas = 0
    for c in body.decode("latin-1"):
        if lines and c == "\n":
            inside = escaped = False
            continue
        if escaped:
            escaped = False
            continue
        if c == "\\":
            escaped = True
            continue
        if inside:
            inside = c != '"'
            continue
        if c == '"':
            inside = True
        elif c in "{[":
            values += 1
            level += 1
        elif c in "}]":
            level -= 1
        elif c == ",":
            values += 1
            commas += level == depth
    return commas + 1, values


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few bytes, so that strings and backslash runs cross block boundaries."""
    monkeypatch.setattr(json_shape, "_BLOCK", 3)


_STRUCTURE = b'"\\{}[],\n a1'


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120).map(lambda b: bytes(_STRUCTURE[x % len(_STRUCTURE)] for x in b)))
def test_the_scan_counts_what_a_character_by_character_reading_counts(body: bytes) -> None:
    for block in (3, 7, 1 << 18):
        json_shape._BLOCK = block
        try:
            depth = 2 if body.lstrip()[:1] == b"{" else 1
            shape = json_shape.scan_json(body)
            assert (shape.events, shape.values) == _reference(body, lines=False, depth=depth)
            lines_values = json_shape.ndjson_values(body, max_values=-1)
            assert lines_values == _reference(body, lines=True, depth=1)[1]
        finally:
            json_shape._BLOCK = 256 << 10


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(alphabet='a"\\,{}[] \n\té'),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)


def _values_of(value: Any) -> int:
    """Containers plus separators, from the decoded structure (an independent oracle)."""
    if isinstance(value, dict):
        return 1 + max(0, len(value) - 1) + sum(_values_of(v) for v in value.values())
    if isinstance(value, list):
        return 1 + max(0, len(value) - 1) + sum(_values_of(v) for v in value)
    return 0


@settings(max_examples=300, deadline=None)
@given(st.lists(_JSON, min_size=1, max_size=30), st.booleans())
def test_valid_json_is_counted_exactly(events: list[Any], wrapped: bool) -> None:
    doc: Any = {"events": events} if wrapped else events
    for option in (0, orjson.OPT_INDENT_2):
        body = orjson.dumps(doc, option=option)
        shape = json_shape.scan_json(body)
        assert shape.events == len(events)
        assert shape.values == _values_of(doc)
        bound = json_shape.upper_bound(body)
        assert bound.events >= shape.events and bound.values >= shape.values


def test_the_scan_stops_early_once_a_limit_is_passed(small_blocks: None) -> None:
    body = b"[" + b",".join([b"{}"] * 1000) + b"]"
    shape = json_shape.json_shape(body, max_events=10, max_values=10**6)
    assert shape.exact and 10 < shape.events < 1000


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["", " ", "\t", "\r", "{}", ' {"a":1} ', "x"]), max_size=40))
def test_ndjson_lines_are_the_non_blank_lines_with_their_numbers(lines: list[str]) -> None:
    body = "\n".join(lines).encode()
    expected = [(n, line.strip()) for n, line in enumerate(body.split(b"\n"), 1) if line.strip()]
    for limit in (1, 3, len(expected), len(expected) + 1, 1000):
        found = json_shape.ndjson_lines(body, max_events=max(limit, 1))
        if len(expected) > max(limit, 1):
            assert found is None
        else:
            assert found is not None
            assert [(n, line.strip()) for n, line in found] == expected


def test_a_huge_blank_body_is_scanned_once() -> None:
    """32 MiB of blanks: the line search is linear (a backtracking pattern would be not)."""
    assert json_shape.ndjson_lines(b" " * (32 * MB), max_events=1) == []


# ---------------------------------------------------------------------------------------
# Arrow sizes from lengths, never from buffers.


def _polars_json(array: pa.Array) -> int:
    import polars as pl

    encoded = pl.Series(pl.from_arrow(array)).struct.json_encode()
    return int(sum(len(s.encode()) if s is not None else 4 for s in encoded.to_list()))


_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=string.printable + '"\\\x01é'),
)
_PROPS = st.dictionaries(
    st.sampled_from(["a", "b", 'q"', "é"]),
    st.recursive(_LEAF, lambda inner: st.lists(inner, max_size=3), max_leaves=6),
    min_size=1,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_PROPS, min_size=1, max_size=8), st.integers(0, 3))
def test_the_arrow_estimate_is_at_least_what_polars_writes(rows: list[Any], skip: int) -> None:
    try:
        array = pa.array(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return  # mixed types Arrow cannot hold in one column
    if not pa.types.is_struct(array.type):
        return
    array = array.slice(min(skip, len(array) - 1))
    assert json_bytes(array) >= _polars_json(array)


def test_null_children_are_counted_by_their_length() -> None:
    n = 10_000_000
    nulls = pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), pa.nulls(n))
    props = pa.StructArray.from_arrays([nulls], names=["x"])
    assert props.nbytes < 1000  # what a buffer-based check would see
    assert json_bytes(props) >= 5 * n  # "null," ten million times


# ---------------------------------------------------------------------------------------
# Timestamps: one vectorised pass, the same answers as Arrow's cast.


def _iso(rng: random.Random) -> str:
    year = rng.choice([0, 1, 1900, 1970, 2000, 2023, 2024, 2100, 9999, rng.randint(0, 9999)])
    text = f"{year:04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}"
    text += rng.choice("T ") + f"{rng.randint(0, 25):02d}"
    form = rng.randint(0, 2)
    if form >= 1:
        text += f":{rng.randint(0, 61):02d}"
    if form >= 2:
        text += f":{rng.randint(0, 61):02d}"
        if rng.random() < 0.5:
            text += "." + str(rng.randint(0, 999_999)).zfill(6)[: rng.randint(1, 6)]
    return text + rng.choice(
        [
            "Z",
            f"+{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}",
            f"-{rng.randint(0, 25):02d}{rng.randint(0, 61):02d}",
            f"+{rng.randint(0, 25):02d}",
        ]
    )


def test_the_vectorised_parser_agrees_with_arrows_cast() -> None:
    rng = random.Random(11)
    texts = [_iso(rng) for _ in range(5000)]
    parsed = _parse_timestamps(pa.array(texts)).cast(pa.int64()).to_pylist()
    target = pa.timestamp("us", tz="UTC")
    for text, got in zip(texts, parsed, strict=True):
        try:
            expected = pa.array([text]).cast(target).cast(pa.int64())[0].as_py()
        except pa.ArrowInvalid:
            expected = None
        assert got == expected, text
    assert 0 < parsed.count(None) < len(texts)  # both kinds were generated
