"""Property-based: arbitrary bytes and arbitrary JSON never cause a 500.

Every answer is JSON: either an error ``{"error": {"code", "message"}}`` or a batch answer
whose counts add up.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from falcon import testing
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.config import Settings
from service.app import create_app
from tests.conftest import API_KEY, new_event

CONTENT_TYPES = [
    "application/json",
    "application/x-ndjson",
    "application/vnd.apache.arrow.stream",
    "text/plain",
    None,
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

# Events whose fields are sometimes right and sometimes anything at all.
field_values = {
    "event_id": st.one_of(st.uuids().map(str), json_values),
    "occurred_at": st.one_of(
        st.just("2025-08-21T06:52:34+03:00"), st.text(max_size=30), json_values
    ),
    "user_id": st.one_of(st.integers(), st.text(max_size=10), json_values),
    "event_type": st.one_of(st.text(max_size=10), json_values),
    "properties": st.one_of(
        st.dictionaries(st.text(max_size=5), json_values, max_size=3), json_values
    ),
}
events = st.fixed_dictionaries({}, optional=field_values)


@pytest.fixture
def conductor(
    settings: Settings,
) -> Iterator[tuple[asyncio.AbstractEventLoop, testing.ASGIConductor]]:
    loop = asyncio.new_event_loop()
    c = testing.ASGIConductor(create_app(settings), headers={"X-API-Key": API_KEY})
    loop.run_until_complete(c.__aenter__())
    yield loop, c
    loop.run_until_complete(c.__aexit__(None, None, None))
    loop.close()


def check(result: Any) -> None:
    assert result.status_code in {202, 400, 413, 415}, (result.status_code, result.text)
    answer = result.json
    if "error" in answer and "received" not in answer:
        assert set(answer["error"]) >= {"code", "message"}
        assert result.status_code != 202
        return
    assert answer["received"] == answer["accepted"] + len(answer["rejected"])
    assert (result.status_code == 202) == (answer["accepted"] > 0)


HYPOTHESIS = hsettings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HYPOTHESIS
@given(
    raw=st.binary(max_size=2000),
    content_type=st.sampled_from(CONTENT_TYPES),
    encoding=st.sampled_from([None, "gzip", "zstd"]),
)
def test_arbitrary_bytes(
    conductor: Any, raw: bytes, content_type: str | None, encoding: str | None
) -> None:
    loop, c = conductor
    headers = {"Content-Encoding": encoding} if encoding else {}
    if content_type:
        headers["Content-Type"] = content_type
    check(loop.run_until_complete(c.simulate_post("/events", body=raw, headers=headers)))


@HYPOTHESIS
@given(doc=json_values)
def test_arbitrary_json_documents(conductor: Any, doc: Any) -> None:
    loop, c = conductor
    check(
        loop.run_until_complete(
            c.simulate_post(
                "/events", body=orjson.dumps(doc), headers={"Content-Type": "application/json"}
            )
        )
    )


@HYPOTHESIS
@given(
    batch=st.lists(events, min_size=1, max_size=8), as_ndjson=st.booleans(), gzipped=st.booleans()
)
def test_arbitrary_events(
    conductor: Any, batch: list[dict[str, Any]], as_ndjson: bool, gzipped: bool
) -> None:
    loop, c = conductor
    batch = [*batch, new_event()]  # at least one valid event: it must always be accepted
    if as_ndjson:
        raw = b"\n".join(json.dumps(e).encode() for e in batch)
        headers = {"Content-Type": "application/x-ndjson"}
    else:
        raw = json.dumps(batch).encode()  # stdlib: integers of any size, as a client may send
        headers = {"Content-Type": "application/json"}
    if gzipped:
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    result = loop.run_until_complete(c.simulate_post("/events", body=raw, headers=headers))
    check(result)
    assert result.status_code == 202
    assert result.json["received"] == len(batch)
    assert len(batch) - 1 not in {r["index"] for r in result.json["rejected"]}
