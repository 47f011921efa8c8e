"""API key scopes: `KEY` has every scope, `KEY:ingest+read` only those; 403 otherwise."""

from __future__ import annotations

import orjson
import pytest
from falcon import testing

from core.config import ApiKey, Settings, load_settings
from core.errors import ConfigError
from service.app import create_app
from service.auth import key_id
from tests.conftest import new_event

JSON = {"Content-Type": "application/json"}
STATS = "/stats/dau?from=2025-08-01&to=2025-08-02"


def test_keys_are_parsed_with_their_scopes() -> None:
    s = load_settings(
        {"API_KEY": "all-of-it", "API_KEYS": "app:ingest, dash:read , ops:read+admin,app:read"}
    )
    assert set(s.keys) == {
        ApiKey("all-of-it", frozenset({"ingest", "read", "admin"})),
        ApiKey("app", frozenset({"ingest", "read"})),  # listed twice: the union
        ApiKey("dash", frozenset({"read"})),
        ApiKey("ops", frozenset({"read", "admin"})),
    }
    assert s.api_keys == ("all-of-it", "app", "dash", "ops")


@pytest.mark.parametrize("entry", ["k:write", "k:", ":read", "k:read+", "k:ingest+nope"])
def test_a_malformed_key_entry_refuses_the_configuration(entry: str) -> None:
    with pytest.raises(ConfigError, match="API_KEYS"):
        load_settings({"API_KEYS": entry})


def test_the_key_id_does_not_depend_on_the_scopes() -> None:
    s = load_settings({"API_KEYS": "secret-1:read"})
    assert [k.secret for k in s.keys] == ["secret-1"]
    assert key_id(s.keys[0].secret) == key_id("secret-1")


async def test_each_route_needs_its_scope(settings: Settings) -> None:
    scoped = settings.with_overrides(
        api_key="", api_keys_list=("app-key:ingest", "dashboard-key:read", "both-key")
    )
    app = create_app(scoped)
    body = orjson.dumps([new_event()])
    answers = {}
    async with testing.ASGIConductor(app) as c:
        for key in ("app-key", "dashboard-key", "both-key", "unknown-key"):
            headers = {"X-API-Key": key}
            answers[key] = (
                await c.simulate_post("/events", body=body, headers={**JSON, **headers}),
                await c.simulate_get(STATS, headers=headers),
            )
        open_routes = [
            (await c.simulate_get(path)).status_code
            for path in ("/healthz", "/openapi.json", "/metrics")
        ]
    post, stats = answers["app-key"]
    assert post.status_code == 202
    assert stats.status_code == 403
    assert stats.json["error"]["code"] == "insufficient_scope"
    assert stats.json["error"]["required_scope"] == "read"
    assert "app-key" not in stats.text  # the secret is never echoed
    post, stats = answers["dashboard-key"]
    assert post.status_code == 403
    assert post.json["error"]["required_scope"] == "ingest"
    assert stats.status_code == 200
    post, stats = answers["both-key"]
    assert (post.status_code, stats.status_code) == (202, 200)
    post, stats = answers["unknown-key"]
    assert (post.status_code, stats.status_code) == (401, 401)
    assert open_routes == [200, 200, 200]


async def test_a_route_that_names_no_scope_needs_admin(settings: Settings) -> None:
    """Fail closed: an authenticated route added without a scope is an operator's."""
    from core.codes import Refusal
    from service.auth import AuthMiddleware

    class Unscoped:
        pass

    auth = AuthMiddleware(
        (ApiKey("a", frozenset({"ingest", "read"})), ApiKey("b", frozenset({"admin"})))
    )

    class Req:
        def __init__(self, key: str) -> None:
            self.headers = {"X-API-KEY": key}
            self.context = type("C", (), {})()

        def get_header(self, name: str) -> str | None:
            return self.headers.get(name.upper())

    with pytest.raises(Refusal) as refused:
        await auth.process_resource(Req("a"), None, Unscoped(), {})  # type: ignore[arg-type]
    assert refused.value.status == 403
    await auth.process_resource(Req("b"), None, Unscoped(), {})  # type: ignore[arg-type]
