"""``events serve``: the HTTP API under gunicorn (``service/gunicorn_config.py``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from core.config import Settings
from core.errors import ConfigError
from service.commands.common import migrate

log = logging.getLogger("events")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bind", help="address to listen on (default: EVENTS_BIND)")
    p.add_argument("--workers", type=int, help="gunicorn worker processes")
    p.add_argument("--config", help="gunicorn config (default: the packaged one)")
    p.add_argument("--no-migrate", action="store_true", help="skip migrations at start-up")


def gunicorn_argv(args: argparse.Namespace) -> list[str]:
    config = args.config or "python:service.gunicorn_config"
    argv = [sys.executable, "-m", "gunicorn", "-c", config]
    if args.bind:
        argv += ["--bind", args.bind]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    return argv


def run(settings: Settings, args: argparse.Namespace) -> int:
    settings.require_auth()
    if not args.no_migrate:
        try:
            asyncio.run(migrate(settings))
        except ConfigError as ex:
            # The API itself only needs RabbitMQ; say so and serve anyway.
            log.warning("migrations not applied at start-up", extra={"error": str(ex)})
    argv = gunicorn_argv(args)
    os.execv(argv[0], argv)  # noqa: S606 - replaces this process with gunicorn
    return 0  # pragma: no cover
