"""Schema-driven fuzzing: schemathesis against the running service, every check on.

The service runs as real processes (``events serve`` under gunicorn with two workers,
``events worker``); schemathesis reads ``/openapi.json`` from it and sends generated
requests, valid and invalid, to every operation: each answer must be a documented status
with the documented content type, headers and schema, valid requests must be accepted,
invalid ones refused, requests without a key refused with 401 (``schemathesis.toml`` and
``tests/schemathesis_hooks.py`` hold the few rules JSON Schema cannot state).

``make test`` runs it with ``EVENTS_FUZZ_EXAMPLES`` (default 400) examples per operation,
which gives over 2,000 cases; ``make fuzz`` with enough for 10,000 and a random seed. The
test prints one ``FUZZ {...}`` line with the figures.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import Settings
from tests.conftest import API_KEY
from tests.services import free_port, start_api, start_worker, wait_ready

ROOT = Path(__file__).resolve().parent.parent
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

EXAMPLES = int(os.environ.get("EVENTS_FUZZ_EXAMPLES", "400"))
MIN_CASES = int(os.environ.get("EVENTS_FUZZ_MIN_CASES", "2000"))
# A fixed seed by default, so that `make test` sends the same cases every run; `make fuzz`
# passes EVENTS_FUZZ_SEED=random to explore new ones (the seed is printed either way).
SEED = os.environ.get("EVENTS_FUZZ_SEED", "20261201")

# The fuzzed instance's settings: bounds that make the document exact where the API's rule
# is a setting JSON Schema cannot compare against (the document states them in words).
FUZZ_ENV = {
    # occurred_at: any instant of years 1-9999 (UTC), so that every date-time the pattern
    # allows is within the bounds (the defaults: not before 1970, at most 1 h ahead).
    "EVENTS_MIN_OCCURRED_AT": "0001-01-01T00:00:00+00:00",
    "EVENTS_MAX_FUTURE_SECONDS": str(10_000 * 366 * 86_400),
    # One event may be as large as a body: the per-event size is not a schema matter.
    "EVENTS_MAX_EVENT_BYTES": str(32 * 1024 * 1024),
    # More analytics queries at once than schemathesis sends: no 503 too_many_queries.
    "EVENTS_QUERY_CONCURRENCY": "16",
    # A limit no run reaches, so that every answer carries the RateLimit-* headers the
    # document describes (and they are checked).
    "EVENTS_RATE_LIMIT": "1000000",
}


@pytest.mark.e2e
@pytest.mark.timeout(900)  # 24 operations: ~260 s on 2 cores (docs/reliability.md)
async def test_schemathesis_finds_nothing_in_thousands_of_generated_requests(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {**FUZZ_ENV, "EVENTS_LAKE_DIR": str(tmp_path / "lake")}
    api = start_api(settings, tmp_path / "api.log", port, **env)
    worker = start_worker(settings, tmp_path / "worker.log", **env)
    report = tmp_path / "schemathesis.json"
    base = f"http://127.0.0.1:{port}"
    argv = [
        str(SCHEMATHESIS),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--workers",
        "2",
        "--generation-database",
        "none",
        "--no-color",
        "--output-truncate",
        "false",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    if SEED != "random":
        argv += ["--seed", SEED]
    try:
        await wait_ready(base)
        started = time.monotonic()
        # cwd: schemathesis.toml and the hooks module (tests.schemathesis_hooks) are found
        # from the repository root.
        run = subprocess.run(  # noqa: ASYNC221 - the event loop has nothing else to do
            argv,
            cwd=ROOT,
            env={**os.environ, "API_KEY": API_KEY, "EVENTS_MAX_QUERY_DAYS": "366"},
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        elapsed = time.monotonic() - started
    finally:
        codes = [api.stop(), worker.stop()]
    output = run.stdout + run.stderr
    assert report.exists(), output
    result = json.loads(report.read_text())
    cases = result["test_cases"]
    print(
        "FUZZ "
        + json.dumps(
            {
                "cases": cases["generated"],
                "failures": cases["with_failures"],
                "errors": len(result["errors"]),
                "seconds": round(elapsed, 1),
                "schemathesis": result["schemathesis_version"],
                "seed": result["seed"],
                "examples_per_operation": EXAMPLES,
                "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} "
                f"{platform.python_version()}",
                "command": result["command"],
            }
        )
    )
    # The document's operations: 11 of ours, GET / (the dashboard), 12 of the vendors.
    assert result["operations"]["tested"] == result["operations"]["total"] == 24, output
    assert cases["with_failures"] == 0 and result["failures"] == [], output
    assert result["errors"] == [] and cases["errored"] == 0, output
    assert run.returncode == 0, output
    assert cases["generated"] >= MIN_CASES, output
    logs = (tmp_path / "api.log").read_text()
    # Independently of schemathesis' own count: no request the service logged was a 5xx.
    statuses = [
        json.loads(line)["status"]
        for line in logs.splitlines()
        if line.startswith("{") and '"msg":"request"' in line
    ]
    assert len(statuses) >= MIN_CASES
    assert [s for s in statuses if s >= 500] == [], logs[-5000:]
    assert "unhandled error" not in logs
    assert codes == [0, 0]
