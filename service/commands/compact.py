"""``events compact``: move days older than the hot window to the Parquet lake."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from core.config import Settings
from core.metrics_dir import ENV
from service.commands.common import install_uvloop, migrate, parse_duration

log = logging.getLogger("events")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--every",
        type=parse_duration,
        metavar="DURATION",
        help="keep running, once per DURATION (30s, 15m, 1h, 1d)",
    )


def serve_compactor_metrics(settings: Settings) -> None:
    """``GET /metrics`` of this compactor on EVENTS_COMPACT_METRICS_PORT (with a shared
    ``PROMETHEUS_MULTIPROC_DIR``, of every process writing there)."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

    registry = REGISTRY
    if os.environ.get(ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(
        settings.compact_metrics_port, addr=settings.worker_metrics_host, registry=registry
    )
    log.info("compactor metrics served", extra={"port": settings.compact_metrics_port})


def run(settings: Settings, args: argparse.Namespace) -> int:
    from storage.compactor import Compactor, run_every
    from storage.lake import Lake

    install_uvloop()
    asyncio.run(migrate(settings, retry_for=30))
    compactor = Compactor(
        settings.database_url,
        Lake(settings.lake_dir),
        hot_days=settings.hot_days,
        file_rows=settings.compact_file_rows,
        lock_timeout_ms=settings.compact_lock_timeout_ms,
    )
    if args.every is None:
        report = asyncio.run(compactor.run_once())
        print(
            f"compacted {len(report.days)} day(s): {report.rows} events in {report.files} "
            f"file(s); skipped (locked elsewhere): {len(report.skipped)}; "
            f"unpublished leftovers removed: {report.orphans_removed}"
        )
        return 0

    if settings.compact_metrics_port:
        serve_compactor_metrics(settings)

    async def forever() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_every(compactor, args.every, stop)

    asyncio.run(forever())
    return 0
