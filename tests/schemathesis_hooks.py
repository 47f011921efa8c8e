"""Schemathesis hooks for the fuzz run (``schemathesis.toml``: ``hooks``).

Only what the OpenAPI document cannot say by itself, each with its reason below:

- Serializers for the two body formats JSON Schema does not cover: the document describes an
  NDJSON or Arrow body by the events it holds (an array of ``Event``); these write that array
  as one JSON object per line, or as an Arrow IPC stream with a column per field.
- Rules across values that JSON Schema cannot state (``from`` <= ``to``; a range of at most
  ``EVENTS_MAX_QUERY_DAYS`` days; at most 8 segments counting the ``event_type`` shorthand;
  weekly windows within ``EVENTS_MAX_QUERY_DAYS``; an occurred_at instant within years
  1-9999 in UTC; an integer written without a fraction): positive cases are moved onto the
  nearest values that keep those rules, so they test a real request instead of a 400.
  Negative cases are left alone.
- A generator gap: a nil UUID the document excludes (``not``) in a positive body.
- Idempotency-Key: a valid key made specific to its request (a reused key is a 422 by
  design, which would hide what the request tests).
- One check: ``POST /events`` accepts the valid events of a request and lists each refused
  one, so a schema-invalid body whose invalid part is one event may get a 2xx; that answer
  must then list a refusal (the negative_data_rejection check is told to accept the 2xx, in
  ``schemathesis.toml``; this check puts the strictness back).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import MutableMapping
from datetime import date, timedelta
from typing import Any

import pyarrow as pa
import schemathesis
from hypothesis.internal import lambda_sources
from schemathesis import Case, CheckContext, HookContext, Response
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

# What `ignored_auth` sends (schemathesis' own probes), for the check that does its work on
# Amplitude's routes (`requests_without_a_known_key_are_refused`).
from schemathesis.specs.openapi._auth_retry import (
    get_security_parameters,
    remove_auth,
    send_probe,
    set_auth_for_case,
)

# CPython 3.11 can raise a spurious "SystemError: AST constructor recursion depth mismatch"
# (python/cpython#106905) when Hypothesis parses a module's source to describe a lambda for
# a strategy's repr, in worker threads; the description is cosmetic, so fall back to a
# generic one instead of failing the operation's tests.
_describe_lambda = lambda_sources.lambda_description


def _lambda_description(f: Any) -> str:
    try:
        return str(_describe_lambda(f))
    except SystemError:
        return "lambda: <source unavailable>"


lambda_sources.lambda_description = _lambda_description

MAX_QUERY_DAYS = int(os.environ.get("EVENTS_MAX_QUERY_DAYS", "366"))
MAX_SEGMENTS = 8
LATEST = date(2999, 12, 31)


def _positive(case: Case) -> bool:
    return case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE


def _negative_body(case: Case) -> bool:
    """Whether the schema-invalid part of a negative case is its body."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.NEGATIVE:
        return False
    location = getattr(case.meta.phase.data, "parameter_location", None)
    if location is not None:  # the coverage phase names what it broke
        return bool(location == ParameterLocation.BODY)
    body = case.meta.components.get(ParameterLocation.BODY)
    return body is not None and body.mode == GenerationMode.NEGATIVE


# ---------------------------------------------------------------------------------------
# Bodies


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    if isinstance(value, list):
        return "".join(json.dumps(item) + "\n" for item in value).encode()
    return json.dumps(value).encode()  # not an array: one line with whatever it is


_ARROW_FIELDS = ("event_id", "occurred_at", "user_id", "event_type", "properties")


def _column(name: str, values: list[Any]) -> pa.Array:
    if name == "properties":  # JSON text, as the API documents for Arrow bodies
        return pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    if name == "user_id" and any(type(v) is int for v in values):
        try:
            return pa.array(values, pa.int64())
        except (pa.ArrowException, TypeError, OverflowError):
            # Strings among the integers, or one beyond int64: the API stores an integer
            # user_id as its decimal text, so the string column says the same.
            values = [str(v) if type(v) is int else v for v in values]
    return pa.array(values)


@schemathesis.serializer("application/vnd.apache.arrow.stream")
def arrow(ctx: Any, value: Any) -> bytes:
    """The events as an Arrow IPC stream, a column per known field (unknown fields are
    ignored by the API in every format, so they are left out here). A body no Arrow table
    can hold (not an array of objects, values of mixed types) is sent as its JSON text,
    which the API must refuse as invalid Arrow."""
    try:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise TypeError("not an array of objects")
        columns = {
            name: _column(name, [row.get(name) for row in value])
            for name in _ARROW_FIELDS
            if any(name in row for row in value)
        }
        table = pa.table(columns) if columns else pa.table({"event_id": pa.nulls(len(value))})
    except (TypeError, ValueError, OverflowError, pa.ArrowException):
        return json.dumps(value).encode()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


# ---------------------------------------------------------------------------------------
# Rules across parameters, for positive cases


def _date(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        return None


def _fit_range(query: dict[str, Any]) -> None:
    first, last = _date(query.get("from")), _date(query.get("to"))
    if first is None or last is None:
        return
    if first > last:
        first, last = last, first
    # Keep the span's remainder: still a varied span, now one the API serves.
    last = min(first + timedelta(days=(last - first).days % MAX_QUERY_DAYS), LATEST)
    query["from"], query["to"] = first.isoformat(), last.isoformat()


def _fit_segments(query: dict[str, Any]) -> None:
    segments = query.get("segment")
    if not isinstance(segments, list):
        return
    room = MAX_SEGMENTS - (1 if "event_type" in query else 0)
    if len(segments) > room:
        query["segment"] = segments[:room]


def _fit_windows(query: dict[str, Any]) -> None:
    granularity = str(query.get("granularity") or "day").strip().lower()
    windows = query.get("windows")
    if granularity not in ("week", "weekly", "weeks") or windows is None:
        return
    most = max(1, MAX_QUERY_DAYS // 7)
    try:
        count = int(windows)
    except ValueError:
        return
    if count > most:
        fitted = 1 + (count - 1) % most
        query["windows"] = str(fitted) if isinstance(windows, str) else fitted


_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _own_idempotency_key(case: Case) -> None:
    """Make a valid Idempotency-Key stand for this request only.

    The API remembers a key with its request's fingerprint (media type, encoding, body):
    the same key with another body is a 422, the same key and body gets the first answer
    again, whatever the query. The generator reuses a few short keys for every request, so
    nearly every one would meet a key already used, and the 422 would hide what the request
    tests. A digest of what the case sends (query included, so a replayed answer is one to
    this very request) is appended to the key, still 1-255 visible ASCII characters; an
    invalid key is left as it is, to be refused.
    """
    headers = case.headers
    key = headers.get("Idempotency-Key") if isinstance(headers, MutableMapping) else None
    if not isinstance(key, str) or not _IDEMPOTENCY_KEY.match(key):
        return
    # Keys in their order: the body goes out in that order, and its bytes are fingerprinted.
    sent = json.dumps([case.media_type, case.query, case.body], default=repr)
    digest = hashlib.sha256(sent.encode()).hexdigest()[:16]
    headers["Idempotency-Key"] = f"{key[: 255 - 17]}.{digest}"


_NIL_OR_MAX_UUID = re.compile(
    r"^(?:0{8}-?0{4}-?0{4}-?0{4}-?0{12}|[fF]{8}-?[fF]{4}-?[fF]{4}-?[fF]{4}-?[fF]{12})$"
)


def _without_excluded_uuids(case: Case) -> None:
    """Schemathesis' coverage phase builds some bodies from the smallest string each pattern
    matches, without the `not` beside the pattern: the nil UUID, which the document excludes
    (`not`), in a case marked positive. Such an id is replaced by a valid one, so that the
    case is the positive case it claims to be."""
    vendor = case.operation.label in VENDORS
    events = _vendor_events(case.operation.label, case.body) if vendor else _events(case.body)
    for i, event in enumerate(events):
        for name in _IDS if vendor else ("event_id",):
            if isinstance(event, dict) and _NIL_OR_MAX_UUID.match(str(event.get(name))):
                event[name] = f"00000000-0000-4000-8000-{i + 1:012x}"


def _events(body: Any) -> list[Any]:
    events = body.get("events") if isinstance(body, dict) else body
    return events if isinstance(events, list) else []


# The vendors' capture routes (ingest/vendors/): where each holds its events, and the
# fields of an event that become our occurred_at, user_id and event_id.
SEGMENT_BATCH = "POST /v1/batch"
SEGMENT_CALLS = {f"POST /v1/{c}" for c in ("track", "identify", "page", "screen", "group", "alias")}
POSTHOG = {"POST /capture", "POST /e", "POST /i/v0/e"}
AMPLITUDE = "POST /2/httpapi"
SHARED_BATCH = "POST /batch"  # Amplitude's body (an `events` array at its top) or PostHog's
VENDORS = {SEGMENT_BATCH, *SEGMENT_CALLS, *POSTHOG, AMPLITUDE, SHARED_BATCH}
_TIMES = ("timestamp", "originalTimestamp", "time")
_USERS = ("userId", "anonymousId", "distinct_id", "user_id", "device_id")
_IDS = ("messageId", "uuid", "insert_id")


def _amplitudes(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("events"), list)


def _vendor_events(label: str, body: Any) -> list[Any]:
    """The events of a vendor's body, as its route reads them."""
    if label == SEGMENT_BATCH:
        batch = body.get("batch") if isinstance(body, dict) else None
        return batch if isinstance(batch, list) else []
    if label in SEGMENT_CALLS:
        return [body]
    if label == AMPLITUDE or (label == SHARED_BATCH and _amplitudes(body)):
        return _events(body)
    # PostHog's: a batch, one event, or an array of events
    if isinstance(body, dict):
        batch = body.get("batch")
        return batch if isinstance(batch, list) else [body]
    return body if isinstance(body, list) else []


_OFFSET = re.compile(r"[+-][0-9]{2}(:?[0-9]{2})?$")


def _within_years_1_to_9999(case: Case) -> None:
    """The document's pattern says what an occurred_at text may be, and its description the
    one rule no pattern can: the instant, once in UTC, is within years 1-9999. A local time
    on 0001-01-01 with a positive offset, or on 9999-12-31 with a negative one, can fall
    outside (the fuzzed instance's bounds are exactly those years); a positive case's offset
    there is written as `Z`."""
    vendor = case.operation.label in VENDORS
    events = _vendor_events(case.operation.label, case.body) if vendor else _events(case.body)
    for event in events:
        for name in _TIMES if vendor else ("occurred_at",):
            text = event.get(name) if isinstance(event, dict) else None
            if not isinstance(text, str) or len(text) < 11:
                continue
            day, time = text[:10], text[11:]
            sign = {"0001-01-01": "+", "9999-12-31": "-"}.get(day)
            offset = _OFFSET.search(time)
            if sign is not None and offset is not None and offset.group().startswith(sign):
                event[name] = text[: 11 + offset.start()] + "Z"


def _integers_written_as_integers(case: Case) -> None:
    """JSON Schema counts 0.0 as an integer; the API reads an integer from its text, where
    `0.0` (a float to orjson, not digits to int()) is refused: a user_id, limit or windows
    is an integer written without fraction or exponent, which the document says in words.
    A positive case's integral float is written as the integer it equals."""
    vendor = case.operation.label in VENDORS
    events = _vendor_events(case.operation.label, case.body) if vendor else _events(case.body)
    for event in events:
        if not isinstance(event, dict):
            continue
        # A vendor's user and message ids, and PostHog's properties.distinct_id, likewise.
        props = event.get("properties")
        for holder, name in [
            *((event, n) for n in (_USERS + _IDS if vendor else ("user_id",))),
            *([(props, "distinct_id")] if vendor and isinstance(props, dict) else []),
        ]:
            value = holder.get(name)
            if type(value) is float and value.is_integer():
                holder[name] = int(value)
    if isinstance(case.query, dict):
        for name, value in case.query.items():
            if type(value) is float and value.is_integer() and name != "timeout":
                case.query[name] = int(value)


@schemathesis.hook
def map_case(context: HookContext, case: Case) -> Case:
    path = case.operation.path
    if _positive(case):
        _integers_written_as_integers(case)
        if path == "/events" or case.operation.label in VENDORS:
            _without_excluded_uuids(case)
            _within_years_1_to_9999(case)
        if isinstance(case.query, dict):
            if path in (
                "/stats/dau",
                "/stats/top-events",
                "/stats/funnel",
                "/stats/active-users",
                "/stats/retention/cohorts",
            ):
                _fit_range(case.query)
            if path.startswith("/stats/"):
                _fit_segments(case.query)
            if path in ("/stats/retention", "/stats/retention/cohorts"):
                _fit_windows(case.query)
    if case.operation.label == "POST /events":
        _own_idempotency_key(case)  # last: the digest is of what is sent
    return case


# ---------------------------------------------------------------------------------------
# Checks


@schemathesis.check
def refused_events_are_listed(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A schema-invalid body that a capture route (POST /events, a vendor's) accepts (2xx)
    must list a refused event."""
    label = case.operation.label
    if (label != "POST /events" and label not in VENDORS) or not _negative_body(case):
        return None
    if case.method.upper() != "POST":  # unsupported_method's OPTIONS, ...
        return None
    if not 200 <= response.status_code < 300:
        return None
    answer = response.json()
    if not answer.get("rejected"):
        raise AssertionError(
            "a schema-invalid request was accepted whole: "
            f"received {answer.get('received')}, accepted {answer.get('accepted')}, "
            "nothing listed as rejected"
        )
    return None


@schemathesis.check
def valid_vendor_events_are_all_accepted(
    ctx: CheckContext, response: Response, case: Case
) -> bool | None:
    """A schema-valid body to a vendor's route has no event refused: the document states
    every rule an event must keep (Segment and PostHog answer 200 even when some are
    refused, so positive_data_acceptance alone would not see a rule the document misses)."""
    if case.operation.label not in VENDORS or not _positive(case):
        return None
    if case.method.upper() != "POST":  # unsupported_method's OPTIONS, ...
        return None
    if not 200 <= response.status_code < 300:
        return None
    rejected = response.json().get("rejected")
    if rejected:
        raise AssertionError(f"a schema-valid request had events refused: {rejected[:3]}")
    return None


# Operations answered in Amplitude's form, where a request without a known key is a 400.
_AMPLITUDE_AUTH = {AMPLITUDE, SHARED_BATCH}
_AUTH_CONFIRMED: set[str] = set()


@schemathesis.check
def requests_without_a_known_key_are_refused(
    ctx: CheckContext, response: Response, case: Case
) -> bool | None:
    """What `ignored_auth` checks, for the routes it cannot: Amplitude's SDK sends its key
    in the body, stops on a 400 "Invalid API key: ..." and retries a 401, so the API
    answers an unknown key (or none) in Amplitude's form with that 400, and the document
    requires no header (`{}` among the security requirements of /2/httpapi and /batch,
    which `ignored_auth` takes as "no key needed" and skips). As `ignored_auth` does, once
    per operation and body form: a request that succeeded is sent again without its key,
    and with an invalid one in each header the document names; each must be refused.
    Without a key, Amplitude's body gets the 400 "Invalid API key: ..." (PostHog's on
    /batch: 401); an invalid header is refused before the body is read, so on /batch in
    PostHog's form (401), on /2/httpapi in Amplitude's (400)."""
    label = case.operation.label
    if label not in _AMPLITUDE_AUTH or not 200 <= response.status_code < 300:
        return None
    if case.method.upper() != "POST":  # unsupported_method's OPTIONS, ...
        return None
    amplitudes = label == AMPLITUDE or _amplitudes(case.body)
    seen = f"{label} {amplitudes}"
    if seen in _AUTH_CONFIRMED:
        return None
    parameters = get_security_parameters(case.operation)
    probes = [remove_auth(case, parameters)]
    for parameter in parameters:
        probe = remove_auth(case, parameters)
        set_auth_for_case(probe, parameter)
        probes.append(probe)
    for i, probe in enumerate(probes):
        answer = send_probe(ctx, case, probe)
        if amplitudes and (i == 0 or label == AMPLITUDE):
            error = answer.json().get("error") if answer.status_code == 400 else None
            refused = isinstance(error, str) and error.startswith("Invalid API key: ")
        else:
            refused = answer.status_code in (401, 403)
        if not refused:
            raise AssertionError(
                f"a request without a known key was not refused: {answer.status_code} "
                f"{answer.text[:300]} (headers {dict(probe.headers or {})})"
            )
    _AUTH_CONFIRMED.add(seen)
    return None
