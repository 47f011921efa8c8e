"""The OpenAPI document against the app: same routes, valid 3.1, and real answers match it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import jsonschema
import orjson
import pytest
from falcon import testing
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from openapi_spec_validator import validate

from analytics.params import parse_date, parse_segments
from core.codes import ErrorCode, Refusal
from core.config import Settings
from ingest.validate import Limits, validate_records
from service.app import _CONTROL, create_app
from service.openapi import openapi_document
from tests.conftest import API_KEY, make_settings, new_event, running_worker

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def app_routes(settings: Settings) -> set[tuple[str, str]]:
    """(path template, method) of every responder the app's router holds."""
    app = create_app(settings)
    found: set[tuple[str, str]] = set()

    def walk(nodes: list[Any]) -> None:
        for node in nodes:
            if node.resource is not None:
                for method in HTTP_METHODS:
                    if hasattr(node.resource, f"on_{method.lower()}"):
                        found.add((node.uri_template, method))
            walk(node.children)

    walk(app._router._roots)
    return found


def documented_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper()) for path, operations in doc["paths"].items() for method in operations
    }


def test_every_route_is_documented_and_every_documented_route_exists(
    settings: Settings,
) -> None:
    routes = app_routes(settings)
    assert ("/events", "POST") in routes  # the walk found the real routes
    assert routes == documented_routes(openapi_document(settings))


def test_the_document_is_valid_openapi_3_1(settings: Settings) -> None:
    doc = openapi_document(settings)
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any schema violation
    # Limits in the text are this deployment's.
    small = settings.with_overrides(max_events_per_request=123)
    assert (
        "At most 123 events" in openapi_document(small)["paths"]["/events"]["post"]["description"]
    )


def check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """``body`` matches the schema documented for this status."""
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, undocumented"
    content = responses[str(status)].get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return
    root = {**schema, "components": doc["components"]}
    jsonschema.validate(body, root, cls=jsonschema.Draft202012Validator)


async def test_real_answers_match_the_documented_schemas(
    settings: Settings, db: asyncpg.Connection
) -> None:
    doc = openapi_document(settings)
    json_headers = {"Content-Type": "application/json"}
    valid = orjson.dumps([new_event(), new_event(), {"event_id": "x"}])
    async with (
        testing.ASGIConductor(create_app(settings), headers={"X-API-Key": API_KEY}) as c,
        running_worker(settings),
    ):
        calls = [
            ("/events", "post", {"body": valid, "headers": json_headers}),
            ("/events?wait=true&timeout=20", "post", {"body": valid, "headers": json_headers}),
            ("/events", "post", {"body": b"[{}]", "headers": json_headers}),
            ("/events", "post", {"body": b"[{", "headers": json_headers}),
            ("/events", "post", {"body": b"x", "headers": {"Content-Type": "text/csv"}}),
            (
                "/events",
                "post",
                {"body": valid, "headers": {**json_headers, "Idempotency-Key": "x" * 300}},
            ),
            ("/stats/dau?from=2025-08-20&to=2025-08-22", "get", {}),
            ("/stats/dau?from=2025-08-22&to=2025-08-20", "get", {}),
            ("/stats/top-events?from=2025-08-20&to=2025-08-22&limit=2", "get", {}),
            ("/stats/retention?start_date=2025-08-21&windows=2&granularity=week", "get", {}),
            ("/healthz", "get", {}),
            ("/readyz", "get", {}),
            ("/openapi.json", "get", {}),
        ]
        seen = set()
        for url, method, kwargs in calls:
            result = await c.simulate_request(method.upper(), url, **kwargs)
            path = url.split("?")[0]
            check(doc, path, method, result.status_code, result.json)
            seen.add((path, result.status_code))
        unauthorized = await c.simulate_get(
            "/stats/dau?from=2025-08-20&to=2025-08-22", headers={"X-API-Key": "wrong"}
        )
        check(doc, "/stats/dau", "get", unauthorized.status_code, unauthorized.json)
        metrics = await c.simulate_get("/metrics")
        page = await c.simulate_get("/docs")
        script = await c.simulate_get("/docs/assets/swagger-ui-bundle.js")
        served = await c.simulate_get("/openapi.json")
    assert {("/events", 202), ("/events", 200), ("/events", 400), ("/events", 415)} <= seen
    assert ("/stats/dau", 200) in seen and ("/stats/dau", 400) in seen
    assert unauthorized.status_code == 401
    assert metrics.status_code == 200
    assert served.json == orjson.loads(orjson.dumps(doc))
    # The docs page works offline: every asset it names is served by the app itself.
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets)
    assert "http://" not in page.text and "https://" not in page.text
    assert script.status_code == 200
    assert b"SwaggerUIBundle" in script.content


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/docs/assets/swagger-ui.css"])
async def test_docs_need_no_key(settings: Settings, path: str) -> None:
    async with testing.ASGIConductor(create_app(settings)) as c:
        result = await c.simulate_get(path)
    assert result.status_code == 200


# ---------------------------------------------------------------------------------------
# The document states what the API enforces (tests/test_schemathesis.py fuzzes the running
# service against it): each documented rule must agree with the code that applies it.

_CODE_USE = re.compile(r"\bErrorCode\.([A-Z_]+)\b")


def test_every_error_code_is_documented_and_every_documented_one_can_be_answered(
    settings: Settings,
) -> None:
    """One enum (core/codes.py) for the code, the document and the README: every code the
    document lists is raised somewhere (none is dead), and the document lists them all.

    The schemathesis run once found analytics answering 503 `too_many_queries`,
    `query_timeout` and `query_too_large`, codes the document's list did not have."""
    root = Path(__file__).resolve().parents[2]
    raised = {
        m.group(1)
        for package in ("ingest", "analytics", "core", "storage", "pipeline", "importer", "service")
        for path in (root / package).rglob("*.py")
        if path.name != "codes.py"
        for m in _CODE_USE.finditer(path.read_text())
    }
    assert raised == {code.name for code in ErrorCode}, (
        "codes never raised",
        {code.name for code in ErrorCode} - raised,
    )
    schemas = openapi_document(settings)["components"]["schemas"]
    assert schemas["ErrorDetail"]["properties"]["code"] == {
        "$ref": "#/components/schemas/ErrorCode"
    }
    assert sorted(schemas["ErrorCode"]["enum"]) == sorted(code.value for code in ErrorCode)
    readme = (root / "README.md").read_text(encoding="utf-8")
    table = readme.split("| Status | `error.code` | When |", 1)[1].split("\n\n", 1)[0]
    assert {c.value for c in ErrorCode if f"`{c.value}`" not in table} == set()


def _validator(settings: Settings, schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    doc = openapi_document(settings)
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def _event_field(settings: Settings, name: str) -> jsonschema.Draft202012Validator:
    doc = openapi_document(settings)
    return _validator(settings, doc["components"]["schemas"]["Event"]["properties"][name])


def _query_param(settings: Settings, path: str, name: str) -> jsonschema.Draft202012Validator:
    doc = openapi_document(settings)
    (param,) = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name]
    return _validator(settings, param["schema"])


WIDE = Limits(
    max_future=timedelta(days=3_652_500), min_occurred_at=datetime.min.replace(tzinfo=UTC)
)
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _refusal(event: dict[str, Any]) -> tuple[str | None, str] | None:
    batch = validate_records([event], WIDE, NOW)
    return (batch.rejected[0].field, batch.rejected[0].code) if batch.rejected else None


# Near the documented form: ASCII digits in every position (impossible dates, hours,
# offsets included), each part optional where the API's own regular expression has it.
_NEAR_TIMESTAMP = (
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt x][0-9]{2}(:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,9})?)?)?"
    r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?\Z"
)


@settings_(max_examples=400, deadline=None)
@given(
    text=st.from_regex(_NEAR_TIMESTAMP)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            f"{day}T{time}"
            for day in [
                *["2023-02-29", "2024-02-29", "2100-02-29", "2000-02-29", "2025-04-31"],
                *["2025-13-01", "2025-00-10", "0000-01-01", "0004-02-29", "9999-12-31"],
            ]
            for time in ["00Z", "23:59:59.9999999+23:59", "24:00", "12:60", "00:00:60", "00-2400"]
        ]
    )
)
def test_the_documented_occurred_at_pattern_is_what_validation_accepts(text: str) -> None:
    documented = _event_field(make_settings(), "occurred_at").is_valid(text)
    refusal = _refusal(new_event(occurred_at=text))
    if documented and refusal is not None:
        # The one rule no pattern can say: the instant, once in UTC, is within years 1-9999.
        assert refusal[1] in ("too_early", "too_far_in_future"), (text, refusal)
        assert text.startswith(("0001-01-01", "9999-12-31")), (text, refusal)
    else:
        assert documented == (refusal is None), (text, refusal)


_NEAR_UUID = (
    r"\A[0-9a-fA-FxX]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\Z"
)


@settings_(max_examples=300, deadline=None)
@given(
    text=st.from_regex(_NEAR_UUID)
    | st.sampled_from(
        [
            "0" * 32,
            "00000000-0000-0000-0000-000000000000",
            "F" * 32,
            "ffffffff-FFFF-ffff-FFFF-ffffffffffff",
        ]
    )
    | st.text(max_size=40)
)
def test_the_documented_event_id_pattern_is_what_validation_accepts(text: str) -> None:
    documented = _event_field(make_settings(), "event_id").is_valid(text)
    assert documented == (_refusal(new_event(event_id=text)) is None), text


@settings_(max_examples=300, deadline=None)
@given(
    text=st.text(
        st.sampled_from(["\x00", " ", "\t", "\u3000", "\u0085", "\u200b", "a", "é"]), max_size=5
    )
    | st.text(max_size=300)
)
def test_the_documented_user_id_and_event_type_rules_are_what_validation_accepts(
    text: str,
) -> None:
    s = make_settings()
    for name in ("user_id", "event_type"):
        documented = _event_field(s, name).is_valid(text)
        refusal = _refusal(new_event(**{name: text}))
        assert documented == (refusal is None), (name, text, refusal)


def _served(params: dict[str, str | list[str]], parse: Any) -> bool:
    """What the API does with these query parameters: QueryGuard, then the route's parser."""
    values = [
        v for value in params.values() for v in (value if isinstance(value, list) else [value])
    ]
    if any(_CONTROL.search(v) for v in values):
        return False
    try:
        parse(params)
    except Refusal:
        return False
    return True


_SEGMENT_PIECES = st.tuples(
    st.sampled_from(["", " ", "\u3000", "\t", "\x85"]),
    st.sampled_from(
        [
            "event_type",
            "properties.country",
            "properties.a.b-c.D_9",
            "properties." + ".".join("a" * 8),
            "properties." + ".".join("a" * 9),
            "properties." + "x" * 64,
            "properties." + "x" * 65,
            "properties.",
            "properties..a",
            "properties.a b",
            "properties.é",
            "user_id",
            "",
        ]
    ),
    st.sampled_from(["", " "]),
    st.sampled_from([":", "=", ";", ""]),
    st.text(max_size=20) | st.text("ab:=", min_size=250, max_size=260),
)


@settings_(max_examples=400, deadline=None)
@given(pieces=_SEGMENT_PIECES)
def test_the_documented_segment_pattern_is_what_the_api_accepts(
    pieces: tuple[str, str, str, str, str],
) -> None:
    text = "".join(pieces)
    documented = _query_param(make_settings(), "/stats/dau", "segment").is_valid([text])
    assert documented == _served({"segment": text}, parse_segments), text


@settings_(max_examples=300, deadline=None)
@given(
    text=st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
    | st.sampled_from(["1969-12-31", "1970-01-01", "2999-12-31", "3000-01-01", "2100-02-29"])
    | st.sampled_from(["2000-02-29", "2024-02-29", "2023-02-29", "1972-02-29", "2400-02-29"])
)
def test_the_documented_date_pattern_is_what_the_api_accepts(text: str) -> None:
    documented = _query_param(make_settings(), "/stats/dau", "from").is_valid(text)
    assert documented == _served({"date": text}, lambda p: parse_date(p["date"], "date")), text
