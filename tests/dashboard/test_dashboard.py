"""The dashboard (``GET /``) in a real headless Chromium against the real service.

Known events go in through ``POST /events?wait=true``; the page is opened on a bookmark
(``#key=...&from=...&to=...&segment=...``) and the numbers of its tables are compared with
the API's answers for the same parameters and, for daily active users and top events, with
values worked out by hand from the events below. Also: where the key goes (sessionStorage,
the X-API-Key header) and where it does not (the URL, any request's URL, the server's logs),
a refused key, an event type written as HTML, and the page's security headers.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request

from tests.dashboard.harness import INGEST_KEY, READ_KEY, Service, chromium, running_service

pytestmark = pytest.mark.e2e

DAYS = ["2025-08-01", "2025-08-02", "2025-08-03", "2025-08-04", "2025-08-05"]
XSS = "<img src=x onerror=\"window.__xss=1;document.title='pwned'\">"

# (day index, time, user, event type, country). Day 4 (2025-08-04) has no event.
EVENTS = [
    (0, "10:00", "u1", "app_open", "UA"),
    (0, "10:05", "u1", "view_item", "UA"),
    (0, "12:00", "u2", "app_open", "PL"),
    (0, "13:00", "u3", "app_open", "UA"),
    (1, "09:00", "u1", "app_open", "UA"),
    (1, "09:30", "u1", "purchase", "UA"),
    (1, "11:00", "u2", "view_item", "PL"),
    (1, "15:00", "u4", "app_open", "UA"),
    (2, "08:00", "u3", "app_open", "UA"),
    (2, "08:10", "u3", "view_item", "UA"),
    (2, "08:20", "u3", "purchase", "UA"),
    (2, "20:00", "u5", "app_open", "PL"),
    (4, "07:00", "u1", "app_open", "UA"),
    (4, "07:30", "u6", XSS, "PL"),
]

# Worked out by hand from EVENTS.
DAU_ALL = [3, 3, 2, 0, 2]  # {u1,u2,u3} {u1,u2,u4} {u3,u5} {} {u1,u6}
DAU_UA = [2, 2, 1, 0, 1]  # {u1,u3} {u1,u4} {u3} {} {u1}
TOP_ALL = [("app_open", 8), ("view_item", 3), ("purchase", 2), (XSS, 1)]
TOP_UA = [("app_open", 6), ("purchase", 2), ("view_item", 2)]  # a tie: by event type
FUNNEL_UA = [3, 2, 2]  # app_open: u1 u3 u4; view_item then purchase: u1 u3

SEGMENT = "properties.country:UA"
STEPS = "app_open,view_item,purchase"


def events() -> list[dict[str, Any]]:
    return [
        {
            "event_id": str(uuid.uuid4()),
            "occurred_at": f"{DAYS[day]}T{at}:00Z",
            "user_id": user,
            "event_type": event_type,
            "properties": {"country": country},
        }
        for day, at, user, event_type, country in EVENTS
    ]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("dashboard")) as running:
        running.send(events())
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


class Opened:
    """A page of its own browser context (its own sessionStorage), with every request
    and every console error or uncaught exception it had."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.context = browser.new_context()
        self.page: Page = self.context.new_page()
        self.requests: list[Request] = []
        self.problems: list[str] = []
        # A lambda: Playwright cannot wrap a built-in method (list.append) as a handler.
        self.page.on("request", lambda r: self.requests.append(r))  # noqa: PLW0108
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.on(
            "console",
            lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None,
        )
        self.page.goto(url)
        self.page.wait_for_selector(
            'body[data-state="ready"], body[data-state="error"], body[data-state="need-key"]',
            timeout=60_000,
        )

    def state(self) -> str | None:
        return self.page.get_attribute("body", "data-state")

    def rows(self, table: str) -> list[list[str]]:
        """The text of each body row's cells (header cell first)."""
        rows: list[list[str]] = self.page.eval_on_selector_all(
            f"#{table} tbody tr",
            "rows => rows.map(r => [...r.cells].map(c => c.textContent))",
        )
        return rows

    def values(self, table: str) -> list[list[str | None]]:
        """The exact numbers (``data-value``) of each body row's cells."""
        values: list[list[str | None]] = self.page.eval_on_selector_all(
            f"#{table} tbody tr",
            "rows => rows.map(r => [...r.cells].map(c => c.getAttribute('data-value')))",
        )
        return values

    def close(self) -> None:
        self.context.close()


def bookmark(service: Service, key: str, **view: str) -> str:
    return f"{service.base}/#" + urlencode({"key": key, **view})


def range_params(segment: str | None) -> list[tuple[str, str]]:
    params = [("from", DAYS[0]), ("to", DAYS[-1])]
    return [*params, ("segment", segment)] if segment else params


def test_the_numbers_on_the_page_are_the_apis_and_the_key_stays_out_of_urls(
    service: Service, browser: Browser
) -> None:
    started = time.monotonic()
    view = {
        "from": DAYS[0],
        "to": DAYS[-1],
        "segment": SEGMENT,
        "granularity": "day",
        "windows": "3",
        "steps": STEPS,
        "funnel_window": "86400",
    }
    opened = Opened(browser, bookmark(service, READ_KEY, **view))
    try:
        assert opened.state() == "ready", opened.page.text_content("#error")
        assert opened.problems == []
        params = range_params(SEGMENT)

        # Daily active users: the API's answer, and the hand-worked values.
        dau = service.stats("/stats/dau", params)
        assert opened.rows("dau-table") == [[d["date"], str(d["unique_users"])] for d in dau["dau"]]
        assert opened.rows("dau-table") == [
            [day, str(n)] for day, n in zip(DAYS, DAU_UA, strict=True)
        ]

        # Rolling active users, one column per window (7 and 30 by default).
        wau = service.stats("/stats/active-users", [*params, ("window", "7")])
        mau = service.stats("/stats/active-users", [*params, ("window", "30")])
        assert opened.rows("active-table") == [
            [w["date"], str(w["users"]), str(m["users"])]
            for w, m in zip(wau["active_users"], mau["active_users"], strict=True)
        ]
        # Looking back: on the last day, u1 u3 u4 were active within 7 days (all UA users).
        assert opened.rows("active-table")[-1] == [DAYS[-1], "3", "3"]

        # Top events: the API's answer and the hand-worked one (a tie ordered by type).
        top = service.stats("/stats/top-events", [*params, ("limit", "10")])
        assert opened.rows("top-table") == [
            [e["event_type"], str(e["count"])] for e in top["top_events"]
        ]
        assert opened.rows("top-table") == [[t, str(n)] for t, n in TOP_UA]

        # Retention by cohort: cohort, its size, then each window's rate (exact, in
        # data-value) and active users (in the text).
        cohorts = service.stats(
            "/stats/retention/cohorts", [*params, ("windows", "3"), ("granularity", "day")]
        )
        assert len(cohorts["cohorts"]) == 5
        assert [
            [v[0], v[1], *(float(r or "nan") for r in v[2:])]
            for v in opened.values("retention-table")
        ] == [
            [c["start"], str(c["cohort_size"]), *(w["rate"] for w in c["retention"])]
            for c in cohorts["cohorts"]
        ]
        shown = opened.rows("retention-table")
        for row, cohort in zip(shown, cohorts["cohorts"], strict=True):
            for text, window in zip(row[2:], cohort["retention"], strict=True):
                assert text == f"{window['rate'] * 100:.1f} % ({window['active_users']})"
        assert [row[:2] for row in shown][:2] == [[DAYS[0], "2"], [DAYS[1], "1"]]  # u1 u3; u4

        # Funnel: users per step, conversions exact in data-value.
        funnel = service.stats("/stats/funnel", [*params, ("steps", STEPS), ("window", "86400")])
        assert opened.rows("funnel-table") == [
            [
                f"{i + 1}. {s['event_type']}",
                str(s["users"]),
                f"{s['conversion'] * 100:.1f} %",
                f"{s['step_conversion'] * 100:.1f} %",
            ]
            for i, s in enumerate(funnel["steps"])
        ]
        assert [[float(r or "nan") for r in v[2:]] for v in opened.values("funnel-table")] == [
            [s["conversion"], s["step_conversion"]] for s in funnel["steps"]
        ]
        assert [int(r[1]) for r in opened.rows("funnel-table")] == FUNNEL_UA

        # Every table has a caption and header cells with a scope.
        for table in ("dau", "active", "top", "retention", "funnel"):
            assert opened.page.text_content(f"#{table}-table caption")
            scopes = opened.page.eval_on_selector_all(
                f"#{table}-table th", "cells => cells.map(c => c.getAttribute('scope'))"
            )
            assert scopes and set(scopes) <= {"col", "row"}

        # The key: out of the address bar, kept in sessionStorage, never in a request's
        # URL, sent as the X-API-Key header of the page's API requests only.
        url = opened.page.url
        assert READ_KEY not in url and "key=" not in url
        assert f"from={DAYS[0]}" in url and "segment=properties.country%3AUA" in url
        stored = opened.page.evaluate("sessionStorage.getItem('events.dashboard.key')")
        assert stored == READ_KEY
        assert opened.requests
        for request in opened.requests:
            assert request.url.startswith(service.base + "/"), request.url  # nothing else
            assert READ_KEY not in request.url
            assert not request.headers.get("referer")  # no-referrer
        api = [r for r in opened.requests if "/stats/" in r.url]
        assert len(api) == 6  # dau, two rolling windows, top events, cohorts, funnel
        assert all(r.headers.get("x-api-key") == READ_KEY for r in api)
        others = [r for r in opened.requests if "/stats/" not in r.url]
        assert others and all("x-api-key" not in r.headers for r in others)

        # Changing an input updates the view and the fragment (still without the key).
        opened.page.fill("#segment", "")
        opened.page.click("#inputs button[type=submit]")
        opened.page.wait_for_function(
            "() => document.body.dataset.state === 'ready' && !location.hash.includes('segment')"
        )
        assert opened.rows("dau-table") == [
            [day, str(n)] for day, n in zip(DAYS, DAU_ALL, strict=True)
        ]
        assert READ_KEY not in opened.page.url
        assert opened.problems == []
    finally:
        opened.close()

    # A reload of the bookmark without the key opens the same view from sessionStorage
    # in the same tab; here a fresh context has no key: the page asks for one.
    fresh = Opened(browser, f"{service.base}/#from={DAYS[0]}&to={DAYS[-1]}")
    try:
        assert fresh.state() == "need-key"
        assert fresh.page.is_visible("#key-form")
        assert not [r for r in fresh.requests if "/stats/" in r.url]
        fresh.page.fill("#key", READ_KEY)
        fresh.page.click("#key-form button[type=submit]")
        fresh.page.wait_for_selector('body[data-state="ready"]')
        assert fresh.rows("dau-table") == [
            [day, str(n)] for day, n in zip(DAYS, DAU_ALL, strict=True)
        ]
        assert READ_KEY not in fresh.page.url
    finally:
        fresh.close()

    logs = service.log_text()
    assert '"path":"/stats/dau"' in logs  # the requests were logged ...
    assert READ_KEY not in logs  # ... but never the key
    print(f"dashboard test: {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize(
    ("key", "code"), [("not-a-key", "unauthorized"), (INGEST_KEY, "insufficient_scope")]
)
def test_a_refused_key_shows_the_error_and_no_data(
    service: Service, browser: Browser, key: str, code: str
) -> None:
    opened = Opened(browser, bookmark(service, key, **{"from": DAYS[0], "to": DAYS[-1]}))
    try:
        assert opened.state() == "error"
        error = opened.page.text_content("#error") or ""
        assert error.startswith(f"{code}: ")
        for table in ("dau", "active", "top", "retention", "funnel"):
            assert opened.rows(f"{table}-table") == []
        assert opened.page.is_visible("#key-form")
        # A refused key is not kept, nor left in the URL.
        assert opened.page.evaluate("sessionStorage.getItem('events.dashboard.key')") is None
        assert key not in opened.page.url
    finally:
        opened.close()


def test_an_invalid_segment_shows_the_apis_message(service: Service, browser: Browser) -> None:
    view = {"from": DAYS[0], "to": DAYS[-1], "segment": "nonsense"}
    opened = Opened(browser, bookmark(service, READ_KEY, **view))
    try:
        assert opened.state() == "error"
        answer = httpx.get(
            f"{service.base}/stats/dau",
            params=range_params("nonsense"),
            headers={"X-API-Key": READ_KEY},
        )
        assert answer.status_code == 400
        detail = answer.json()["error"]
        shown = opened.page.text_content("#dau .error")
        assert shown == f"{detail['code']}: {detail['message']}"
        assert opened.rows("dau-table") == []
    finally:
        opened.close()


def test_an_event_type_written_as_html_is_shown_as_text(service: Service, browser: Browser) -> None:
    view = {"from": DAYS[0], "to": DAYS[-1]}
    opened = Opened(browser, bookmark(service, READ_KEY, **view))
    try:
        assert opened.state() == "ready"
        # The hand-worked top events, the last one's type shown as the text it is.
        assert opened.rows("top-table") == [[t, str(n)] for t, n in TOP_ALL]
        assert opened.page.query_selector("main img") is None
        assert opened.page.evaluate("window.__xss") is None
        assert opened.page.title() == "events dashboard"
        assert not [r for r in opened.requests if r.url.endswith("/x")]
        assert opened.problems == []
    finally:
        opened.close()


def test_the_page_and_its_files_carry_the_security_headers(service: Service) -> None:
    page = httpx.get(f"{service.base}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in page.text  # no inline script: every script is a file
    assert "http://" not in page.text and "https://" not in page.text
    for path in (
        "/dashboard/assets/dashboard.js",
        "/dashboard/assets/dashboard.css",
        "/dashboard/vendor/chart.js/chart.umd.min.js",
        "/dashboard/vendor/chart.js/LICENSE",
        "/dashboard/vendor/chart.js/VERSION",
    ):
        asset = httpx.get(f"{service.base}{path}")
        assert asset.status_code == 200, path
        assert asset.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(f"{service.base}/dashboard/assets/dashboard.js")
    assert "javascript" in script.headers["content-type"]
    # API data goes into the page as text only: no HTML parsing of strings anywhere.
    assert not re.search(r"\.(inner|outer)HTML|insertAdjacentHTML|document\.write", script.text)
