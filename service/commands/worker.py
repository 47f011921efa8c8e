"""``events worker``: consume the queue and store events in PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal

from core.config import Settings
from core.logs import configure_logging
from core.metrics_dir import ensure_metrics_dir
from service.commands.common import install_uvloop, migrate

log = logging.getLogger("events")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--processes", type=int, help="worker processes (EVENTS_WORKER_PROCESSES)")
    p.add_argument(
        "--concurrency",
        type=int,
        help="micro-batches written at once per process (EVENTS_WORKER_CONCURRENCY)",
    )
    p.add_argument("--no-migrate", action="store_true", help="skip migrations at start-up")


def run_worker_process(settings: Settings) -> None:
    """One worker process: consume until SIGTERM/SIGINT, then finish and exit."""
    from pipeline.worker import Worker

    configure_logging(settings.log_level, settings.log_format)
    install_uvloop()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Worker(settings).run(stop)

    asyncio.run(main())


def serve_worker_metrics(settings: Settings) -> None:
    """``GET /metrics`` of this host's worker processes on EVENTS_WORKER_METRICS_PORT."""
    ensure_metrics_dir()  # before prometheus_client is imported
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(
        settings.worker_metrics_port, addr=settings.worker_metrics_host, registry=registry
    )
    log.info("worker metrics served", extra={"port": settings.worker_metrics_port})


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.concurrency:
        settings = settings.with_overrides(worker_concurrency=args.concurrency)
    processes = args.processes or settings.worker_processes
    if not args.no_migrate:
        asyncio.run(migrate(settings, retry_for=float("inf")))
    if settings.worker_metrics_port:
        serve_worker_metrics(settings)
    if processes == 1:
        run_worker_process(settings)
        return 0
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=run_worker_process, args=(settings,), name=f"worker-{i}")
        for i in range(processes)
    ]
    for child in children:
        child.start()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    return max((c.exitcode or 0) for c in children)
