"""``docs/dashboard.png``: the dashboard on the shared sample (5,000 events of August 2025).

    .venv/bin/python -m tests.dashboard.screenshot [docs/dashboard.png]

Starts the service as the dashboard's tests do (a database and queues of its own, dropped
afterwards), sends the sample through ``POST /events?wait=true`` and photographs the page in
Debian's headless chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from tests import sample
from tests.dashboard.harness import READ_KEY, chromium, running_service

ROOT = Path(__file__).resolve().parents[2]
VIEW = {
    "from": "2025-08-01",
    "to": "2025-08-31",
    "segment": "properties.country:PL",
    "granularity": "week",
    "windows": "4",
    "steps": "app_open,view_item,add_to_cart,purchase",
}


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as workdir, running_service(Path(workdir)) as service:
        events = sample.events()
        for start in range(0, len(events), 1000):
            service.send(events[start : start + 1000])
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{service.base}/#" + urlencode({"key": READ_KEY, **VIEW}))
            page.wait_for_selector('body[data-state="ready"]', timeout=60_000)
            page.screenshot(path=str(out), full_page=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png")
