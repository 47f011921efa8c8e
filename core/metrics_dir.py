"""Where processes of one host share their Prometheus values (multiprocess mode).

prometheus_client decides at import time whether values live in memory or in files under
``PROMETHEUS_MULTIPROC_DIR``; this module imports nothing of it, so the launchers
(``events serve|up|worker``, ``gunicorn.conf.py``) can set the directory first.
"""

from __future__ import annotations

import os
import shutil
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"


def ensure_metrics_dir() -> tuple[str, bool]:
    """The directory (created and exported if unset) and whether this call created it.

    A directory given by the operator must be empty when the processes start, as
    prometheus_client requires; a created one is fresh.
    """
    given = os.environ.get(ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        return given, False
    path = tempfile.mkdtemp(prefix="events-metrics-")
    os.environ[ENV] = path
    return path, True


def remove_metrics_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
