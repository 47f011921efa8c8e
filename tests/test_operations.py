"""Monitoring: the alert rules, the Grafana dashboard, and the metrics they name.

- ``promtool check rules`` accepts ``deploy/prometheus/alerts.yml``;
- ``promtool test rules`` runs ``alerts_test.yml``, where every alert fires on a series that
  should fire it and stays silent on one that should not;
- every rule has a ``for``-free or ``for`` condition, a severity, a summary, a description
  and a runbook anchor that exists in ``deploy/README.md``;
- the dashboard is importable JSON (datasource input and variable, unique ids, grid
  positions, targets with PromQL that promtool parses);
- every metric a rule or a panel names is exposed by the running service's endpoints
  (``events serve``, ``events worker`` and ``events compact --every`` as real processes).

promtool comes with Debian's ``prometheus`` package (``tools/system-packages``, which
``make test`` runs); without it these tests fail, they are not skipped.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from core.config import Settings
from tests.conftest import API_KEY, new_event
from tests.services import EVENTS, Process, free_port, service_env, start_api, wait_ready

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "deploy" / "prometheus"
ALERTS = RULES_DIR / "alerts.yml"
ALERTS_TEST = RULES_DIR / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "events.json"
DEPLOY_README = ROOT / "deploy" / "README.md"

# What the issue asks the alerts to watch, by alert name.
EXPECTED_ALERTS = {
    "Events5xxRate",
    "EventsQueueGrowing",
    "EventsDeadLetters",
    "EventsNoCommits",
    "EventsCompactionFailing",
    "EventsRedisUnreachable",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's `prometheus` package "
            "(tools/system-packages does it; `make test` runs that)"
        )
    return path


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    found = []
    for panel in doc["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_exprs(doc: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(doc) if p["type"] != "row" for t in p["targets"]]


# --- metric names in PromQL -------------------------------------------------------------

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels, label lists,
    ranges, strings and Grafana variables stripped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables ($__rate_interval, ...)
    # Label lists of grouping and vector matching.
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text, flags=re.I
    )
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue  # a function or an aggregation; a keyword
        names.add(name)
    return names


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (route, le) (rate(http_request_duration_seconds_bucket"
        '{route!="unmatched", x=~"a(b)}"}[$__rate_interval])))'
    )
    assert metric_names(expr) == {"http_request_duration_seconds_bucket"}
    expr = (
        'max by (queue) (queue_messages{queue!~".+_dlq"}) > 0 unless on () '
        "sum(increase(worker_commits_total[10m] offset 5m)) > 1e3 * 2"
    )
    assert metric_names(expr) == {"queue_messages", "worker_commits_total"}
    expr = "time() - max(compaction_last_success_timestamp_seconds > 0) > 3 * 3600"
    assert metric_names(expr) == {"compaction_last_success_timestamp_seconds"}
    assert metric_names("a / ignoring(x) group_left(y) b:rate5m or vector(0)") == {"a", "b:rate5m"}


# --- the rules ----------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in done.stdout


def test_every_alert_fires_when_it_should_and_only_then() -> None:
    """``promtool test rules``; and the test file has, for every alert, a case expecting it
    to fire and one expecting silence."""
    done = subprocess.run(
        [promtool(), "test", "rules", ALERTS_TEST.name],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    cases = [
        case
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    for name in EXPECTED_ALERTS:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no case where it stays silent"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.+?)\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).lower().replace("`", ""))
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_rule_has_a_severity_annotations_and_a_runbook_section() -> None:
    found = rules()
    assert {r["alert"] for r in found} == EXPECTED_ALERTS
    anchors = _anchors(DEPLOY_README.read_text())
    for rule in found:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"].strip() and notes["description"].strip(), rule["alert"]
        path, _, anchor = notes["runbook_url"].partition("#")
        assert path == "deploy/README.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in deploy/README.md"
    # Conditions that are states, not counter increases, wait before firing.
    for rule in found:
        if rule["alert"] != "EventsCompactionFailing":
            assert rule.get("for"), f"{rule['alert']} has no `for:`"


# --- the dashboard ------------------------------------------------------------------------


def test_the_dashboard_is_importable() -> None:
    doc = dashboard()
    assert doc["schemaVersion"] >= 36
    assert doc["uid"] and doc["title"]
    assert [i["name"] for i in doc["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    every = panels(doc)
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in every:
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["targets"], f"{panel['title']} has no target"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]
            assert metric_names(target["expr"]), f"{panel['title']}: {target['expr']} reads nothing"
    titles = " ".join(p["title"].lower() for p in every)
    for topic in (
        "ingest rate",
        "refusals by reason",
        "latency",
        "queue depth",
        "worker lag",
        "batch size",
        "dead letters",
        "compaction",
        "redis",
    ):
        assert topic in titles, f"no panel about {topic}"


def test_promtool_parses_every_panel_query(tmp_path: Path) -> None:
    """Each panel's PromQL, with Grafana's interval variables filled in, as a recording rule."""
    doc = dashboard()
    records = [
        {
            "record": f"dashboard:panel{p['id']}:{t['refId'].lower()}",
            "expr": re.sub(r"\$__(rate_)?interval|\$__range", "5m", t["expr"]),
        }
        for p in panels(doc)
        if p["type"] != "row"
        for t in p["targets"]
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    done = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- the metrics they name, from the running service ---------------------------------------


def sample_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


async def scrape(url: str, *, until: str | None = None, timeout: float = 30) -> str:
    """The text at ``url`` (retried while the endpoint starts; with ``until``, until that
    sample is above 0)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            try:
                answer = await http.get(url)
                if answer.status_code == 200 and (
                    until is None or (sample(answer.text, until) or 0) > 0
                ):
                    return answer.text
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: no answer" + (f" with {until} > 0" if until else ""))
            await asyncio.sleep(0.2)


@pytest.mark.e2e
async def test_every_metric_the_rules_and_the_dashboard_name_is_exposed(
    settings: Settings, tmp_path: Path
) -> None:
    api_port, worker_port, compactor_port = free_port(), free_port(), free_port()
    env = {
        "EVENTS_WORKER_METRICS_HOST": "127.0.0.1",
        "EVENTS_LAKE_DIR": str(tmp_path / "lake"),
        "EVENTS_HOT_DAYS": "36500",  # nothing in the shared test database is cold
    }
    api = start_api(settings, tmp_path / "api.log", api_port, **env)
    worker = Process(
        [*EVENTS, "worker", "--no-migrate", "--processes", "1"],
        service_env(settings, EVENTS_WORKER_METRICS_PORT=str(worker_port), **env),
        tmp_path / "worker.log",
    )
    compactor = Process(
        [*EVENTS, "compact", "--every", "1h"],
        service_env(settings, EVENTS_COMPACT_METRICS_PORT=str(compactor_port), **env),
        tmp_path / "compactor.log",
    )
    base = f"http://127.0.0.1:{api_port}"
    try:
        await wait_ready(base)
        now = datetime.now(UTC).isoformat()
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            stored = await http.post(
                "/events?wait=true",
                json=[new_event(occurred_at=now) for _ in range(5)],
                headers={"X-API-Key": API_KEY},
            )
            assert stored.status_code == 200, stored.text
        api_text = await scrape(f"{base}/metrics", until="events_accepted_total")
        worker_text = await scrape(
            f"http://127.0.0.1:{worker_port}/metrics", until="worker_commits_total"
        )
        compactor_text = await scrape(
            f"http://127.0.0.1:{compactor_port}/metrics",
            until="compaction_last_success_timestamp_seconds",
        )
    finally:
        for process in (compactor, worker, api):
            process.stop()
    logs = {p.log.name: p.log.read_text()[-2000:] for p in (api, worker, compactor)}

    exposed = sample_names(api_text) | sample_names(worker_text) | sample_names(compactor_text)
    named: dict[str, set[str]] = {}
    for rule in rules():
        for name in metric_names(rule["expr"]):
            named.setdefault(name, set()).add(f"alert {rule['alert']}")
    for panel in panels(dashboard()):
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                named.setdefault(name, set()).add(f"panel {panel['title']!r}")
    missing = {name: sorted(users) for name, users in named.items() if name not in exposed}
    assert not missing, f"named but not exposed: {missing}\n{logs}"

    # Each process measures its part: the API the queues and Redis, the worker its commit,
    # the compactor its run.
    assert sample(api_text, "redis_up") == 1
    assert sample(api_text, "queue_messages", queue=settings.queue_name) is not None
    assert sample(api_text, "queue_messages", queue=settings.dead_letter_queue_name) == 0
    assert (sample(worker_text, "worker_commits_total") or 0) >= 1
    assert (sample(worker_text, "worker_commit_lag_seconds_count") or 0) >= 1
    last_commit = sample(worker_text, "worker_last_commit_timestamp_seconds") or 0
    assert time.time() - 120 < last_commit <= time.time()
    assert (sample(compactor_text, "compaction_runs_total") or 0) >= 1
    assert time.time() - 120 < (
        sample(compactor_text, "compaction_last_success_timestamp_seconds") or 0
    )
    # Known label values exist before anything happened (so rate() sees the first one).
    for reason in ("undecodable", "staging_failed", "refused_by_database", "write_failed"):
        assert sample(worker_text, "dead_letters_total", reason=reason) == 0
    for stage in ("day", "run"):
        assert sample(compactor_text, "compaction_failures_total", stage=stage) == 0
    for reason in ("queue_full", "broker_unavailable"):
        assert sample(api_text, "publish_refused_total", reason=reason) == 0
    assert sample(api_text, "events_rejected_total", reason="invalid_uuid") == 0
    assert sample(api_text, "events_received_total", source="ndjson") == 0
