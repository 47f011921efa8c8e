"""The OpenAPI document against the app: same routes, valid 3.1, and real answers match it."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import jsonschema
import orjson
import pytest
from falcon import testing
from openapi_spec_validator import validate

from core.config import Settings
from ingest.app import create_app
from ingest.openapi import openapi_document
from tests.conftest import API_KEY, new_event, running_worker

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
