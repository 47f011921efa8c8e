"""``events up``: the API (``events serve``) and the workers (``events worker``) together.

Each runs in its own session, so a terminal's Ctrl-C reaches only this process, which then
asks both to stop gracefully (SIGTERM) instead of gunicorn's quick SIGINT shutdown; one
metrics directory is shared, so the API's ``GET /metrics`` reports the workers too.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

from core.config import Settings
from core.metrics_dir import ensure_metrics_dir, remove_metrics_dir
from service.commands.common import migrate


def supervise(
    settings: Settings, *, bind: str | None, workers: int | None, processes: int | None
) -> int:
    """Run both until either ends or this process is asked to stop; the exit status."""
    settings.require_auth()
    asyncio.run(migrate(settings, retry_for=30))
    events = [sys.executable, "-m", "service.cli"]
    serve = [*events, "serve", "--no-migrate"]
    if bind:
        serve += ["--bind", bind]
    if workers:
        serve += ["--workers", str(workers)]
    worker = [*events, "worker", "--no-migrate"]
    if processes:
        worker += ["--processes", str(processes)]
    metrics_dir, created = ensure_metrics_dir()
    children = [
        subprocess.Popen(serve, start_new_session=True),  # noqa: S603
        subprocess.Popen(worker, start_new_session=True),  # noqa: S603
    ]
    print(
        f"events: API on http://{bind or settings.bind} (POST /events), workers consuming "
        f"{settings.queue_name}; Ctrl-C stops both",
        flush=True,
    )

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(c.poll() is None for c in children):
        time.sleep(0.2)
    stop(signal.SIGTERM, None)
    codes = [c.wait() for c in children]
    if created:
        remove_metrics_dir(metrics_dir)
    return 0 if stopping else max(1, *codes)
