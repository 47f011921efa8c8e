"""Deployment files checked without a Docker engine (this machine has only the client).

compose.yml is parsed and its structure checked (services, health checks, depends_on
conditions, volumes, configuration from .env); the Dockerfile is checked for a slim base,
a non-root user, pinned dependencies and every package; .env.example must list every
setting with its default; gunicorn.conf.py is loaded as gunicorn loads it.
"""

from __future__ import annotations

import re
import runpy
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import SETTINGS, settings_env_example

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"api", "worker", "compactor", "postgres", "redis", "rabbitmq"}
OURS = {"api", "worker", "compactor"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yml").read_text())
    return loaded


def test_compose_has_every_service_with_a_health_check() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL")


def test_compose_dependencies_wait_for_healthy_services() -> None:
    services = compose()["services"]
    for name in OURS:
        depends = services[name]["depends_on"]
        assert depends, name
        for dependency, condition in depends.items():
            assert dependency in SERVICES - OURS
            assert condition == {"condition": "service_healthy"}
    assert set(services["api"]["depends_on"]) == {"postgres", "rabbitmq", "redis"}


def test_compose_volumes_and_configuration() -> None:
    doc = compose()
    services = doc["services"]
    assert {"pgdata", "lake"} <= set(doc["volumes"])
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    for name in ("api", "compactor"):
        assert "lake:/data/lake" in services[name]["volumes"]
    for name in OURS:
        service = services[name]
        assert service["build"] == "."
        assert service["env_file"] == [".env"]
        env = service["environment"]
        # The container's own addresses win over .env's local ones.
        assert env["DATABASE_URL"].split("@")[1].startswith("postgres:5432/")
        assert "@rabbitmq:5672" in env["RABBITMQ_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert env["EVENTS_LAKE_DIR"] == "/data/lake"
        assert env["EVENTS_BIND"] == "0.0.0.0:8000"
    assert services["api"]["command"] == ["events", "serve"]
    assert services["worker"]["command"] == ["events", "worker"]
    assert services["compactor"]["command"][:2] == ["events", "compact"]
    # The worker's health check reads the metrics port it is given.
    assert services["worker"]["environment"]["EVENTS_WORKER_METRICS_PORT"] in " ".join(
        services["worker"]["healthcheck"]["test"]
    )


def test_env_example_lists_every_setting_with_its_default() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == settings_env_example(), "regenerate: events config --env-example"
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert listed == {s.env for s in SETTINGS}


def test_dockerfile_is_slim_non_root_pinned_and_complete() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim$", text, flags=re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "pip install -r requirements.lock" in text
    assert "pip install --no-deps ." in text
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    for package in packages:
        name = package.rstrip("*")
        assert f"COPY {name} {name}" in text, f"the image lacks {name}/"
    assert "HEALTHCHECK" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".env", ".git"} <= set(ignored)


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_requirements_lock_pins_every_runtime_dependency() -> None:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[_name(name)] = version
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in wanted:
        if "win32" in requirement and "!=" not in requirement:
            continue
        assert _name(requirement) in pins, f"{requirement} is not in requirements.lock"


def test_gunicorn_conf_loads_with_the_service_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The config exports a metrics directory; keep it out of this test process's env.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert conf["worker_class"] == "service.gunicorn_worker.EventsWorker"
    assert conf["wsgi_app"] == "service.app:create_app_from_env()"
    assert conf["workers"] >= 1
    assert conf["preload_app"] is True
    assert conf["graceful_timeout"] > 0 and conf["timeout"] > conf["graceful_timeout"]
    assert callable(conf["child_exit"]) and callable(conf["on_exit"])
