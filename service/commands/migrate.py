"""``events migrate``: create the database if needed and apply the migrations."""

from __future__ import annotations

import argparse
import asyncio

from core.config import Settings
from service.commands.common import migrate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="seconds to keep retrying while PostgreSQL is unreachable",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    applied = asyncio.run(migrate(settings, retry_for=args.wait))
    print(f"migrations applied: {applied or 'none (up to date)'}")
    return 0
