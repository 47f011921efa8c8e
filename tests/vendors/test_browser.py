"""The browser side: posthog-js (vendored from npm, ``browser/posthog-js``) running in a real
headless Chromium on a page of another origin sends to the service, and a cross-origin JSON
request with a key header passes its CORS preflight. What an app's web pages do."""

from __future__ import annotations

import asyncio
import base64
import http.server
import threading
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from playwright.sync_api import sync_playwright

from tests.services import free_port
from tests.vendors.conftest import INGEST_KEY, Service, stored

CHROMIUM = Path("/usr/bin/chromium")
POSTHOG_JS = Path(__file__).parent / "browser" / "posthog-js" / "array.no-external.js"
PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>app</title>
<script src="/posthog.js"></script></head><body>app</body></html>"""

pytestmark = pytest.mark.e2e


class _AppPage(http.server.BaseHTTPRequestHandler):
    """The app's own site: the page and posthog-js."""

    def do_GET(self) -> None:
        if self.path == "/posthog.js":
            body, kind = POSTHOG_JS.read_bytes(), "text/javascript"
        else:
            body, kind = PAGE, "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _in_browser(base: str, script: str) -> dict[str, Any]:
    # The page's origin is http://localhost:<port>, the service's http://127.0.0.1:<port>:
    # two origins (CORS applies) in one address space (Chromium blocks a public origin's
    # requests to a loopback address outright).
    site = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _AppPage)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    app = f"http://localhost:{site.server_address[1]}"
    try:
        return _run(base, app, script)
    finally:
        site.shutdown()
        site.server_close()


def _run(base: str, app: str, script: str) -> dict[str, Any]:
    if not CHROMIUM.exists():
        raise AssertionError(f"{CHROMIUM} is missing: run tools/system-packages (make test does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            requests: list[dict[str, Any]] = []
            page.on(
                "requestfinished",
                lambda r: (
                    requests.append({"url": r.url, "method": r.method})
                    if r.url.startswith(base)
                    else None
                ),
            )

            page.goto(f"{app}/")
            result = page.evaluate(script)
            page.wait_for_timeout(500)
            return {"result": result, "errors": errors, "requests": requests}
        finally:
            browser.close()


POSTHOG = """async ([key, base]) => {
  posthog.init(key, {
    api_host: base, autocapture: false, capture_pageview: false, capture_pageleave: false,
    disable_session_recording: true, advanced_disable_flags: true, disable_surveys: true,
    persistence: 'memory', request_batching: true,
    opt_out_useragent_filter: true,  // HeadlessChrome is on posthog-js's list of bots
  });
  posthog.identify('web-user-1');
  for (let i = 0; i < 5; i++) posthog.capture('Signed Up', {plan: 'pro', i});
  await new Promise(r => setTimeout(r, 4000));  // posthog-js flushes its queue every 3 s
  return posthog.get_distinct_id();
}"""


async def test_posthog_js_in_a_browser_sends_from_another_origin(
    service: Service, db: asyncpg.Connection
) -> None:
    script = f"({POSTHOG})({orjson.dumps([INGEST_KEY, service.base]).decode()})"
    outcome = await asyncio.to_thread(_in_browser, service.base, script)
    assert outcome["result"] == "web-user-1"
    rows = await stored(db, 6)
    signed_up = [r for r in rows if r["event_type"] == "Signed Up"]
    assert sorted(r["properties"]["i"] for r in signed_up) == [0, 1, 2, 3, 4]
    assert {r["user_id"] for r in signed_up} == {"web-user-1"}
    assert all(r["properties"]["$lib"] == "web" for r in signed_up)
    assert {r["event_type"] for r in rows} == {"Signed Up", "$identify"}
    assert INGEST_KEY not in str(rows)  # posthog-js's properties.token is not stored
    # No CORS error, and the SDK read every answer (a blocked one is an error in the console).
    assert not [e for e in outcome["errors"] if "CORS" in e or "blocked" in e], outcome


PREFLIGHTED = """async ([base, auth, body]) => {
  const answer = await fetch(base + '/v1/batch', {
    method: 'POST',
    headers: {'Content-Type': 'application/json', 'Authorization': auth},
    body,
  });
  return {status: answer.status, body: await answer.json(),
          request_id: answer.headers.get('X-Request-ID')};
}"""


async def test_a_json_request_with_a_key_header_passes_its_preflight(
    service: Service, db: asyncpg.Connection
) -> None:
    auth = "Basic " + base64.b64encode(f"{INGEST_KEY}:".encode()).decode()
    body = orjson.dumps(
        {"batch": [{"type": "track", "event": "Clicked", "userId": "u-1", "messageId": "m-1"}]}
    ).decode()
    script = f"({PREFLIGHTED})({orjson.dumps([service.base, auth, body]).decode()})"
    outcome = await asyncio.to_thread(_in_browser, service.base, script)
    # The page read the answer (CORS allowed it) and an exposed header.
    assert outcome["result"]["status"] == 200, outcome
    assert outcome["result"]["body"]["success"] is True
    assert outcome["result"]["request_id"]
    # The browser asked first (a preflight: JSON and an Authorization header), without the
    # key, and was let through; the service's access log shows both.
    lines = [orjson.loads(line) for line in service.logs[0].read_text().splitlines()]
    seen = [(r["method"], r["status"]) for r in lines if r.get("path") == "/v1/batch"]
    assert seen == [("OPTIONS", 204), ("POST", 200)], seen
    rows = await stored(db, 1)
    assert [(r["event_type"], r["user_id"]) for r in rows] == [("Clicked", "u-1")]
