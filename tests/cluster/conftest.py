"""The local cluster of ``deploy/local/cluster`` for the tests of this folder: started
(or rebuilt when a test left it broken) before each test, taken down after the last one
unless it was already running before them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from core.config import Settings
from tests.conftest import RUN_ID, make_settings

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "deploy" / "local" / "cluster"


def cluster(command: str) -> dict[str, str]:
    run = subprocess.run(
        [str(CLUSTER), command], capture_output=True, text=True, timeout=240, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)


@pytest.fixture(scope="session")
def _cluster_module() -> Iterator[None]:
    if os.geteuid() != 0:
        raise AssertionError("the cluster tests run as root (make test does on this machine)")
    was_up = subprocess.run([str(CLUSTER), "status"], capture_output=True, check=False)
    yield
    if was_up.returncode != 0:
        cluster("down")


@pytest.fixture
def up(_cluster_module: None) -> dict[str, str]:
    """The cluster, healthy (``up`` rebuilds it when a test left it broken)."""
    return cluster("up")


def on_database(url: str, name: str) -> str:
    """``url`` (one or several hosts) with its database replaced by ``name``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def cluster_settings(up: dict[str, str], name: str) -> Settings:
    return make_settings(
        database_url=on_database(up["DATABASE_URL"], f"events_{name}_{RUN_ID}"),
        rabbitmq_url=up["RABBITMQ_URL"],
    )
