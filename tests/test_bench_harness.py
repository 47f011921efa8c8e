"""``events bench --start`` works end to end (a small run; speed is not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import make_settings


@pytest.mark.e2e
def test_bench_start_reports_every_figure() -> None:
    settings = make_settings()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "RABBITMQ_URL": settings.rabbitmq_url,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "bench",
            "--start",
            "--events",
            "3000",
            "--batch",
            "500",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["statuses"] == {"202": 6}
    assert result["events"] == 3000
    assert result["end_to_end_events_per_s"] > 0
    assert result["accept_events_per_s"] >= result["end_to_end_events_per_s"]
    assert result["ceiling_events_per_s"] > 0
    assert result["raw_copy_events_per_s"] > 0
    assert set(result["peak_rss_mb"]) == {"api", "worker"}
    assert set(result["cpu_s_per_1000_events"]) >= {"api", "worker", "postgres"}
    assert result["machine"]["cpus"] == os.cpu_count()
