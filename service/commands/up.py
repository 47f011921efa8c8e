"""``events up``: migrate, then run the API and the workers together (``service/supervisor.py``)."""

from __future__ import annotations

import argparse

from core.config import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bind")
    p.add_argument("--workers", type=int, help="gunicorn worker processes")
    p.add_argument("--processes", type=int, help="worker processes")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from service.supervisor import supervise

    return supervise(settings, bind=args.bind, workers=args.workers, processes=args.processes)
