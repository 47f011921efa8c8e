"""``events import``: bulk-import history, the same as ``import_events`` (``importer/cli.py``)."""

from __future__ import annotations

import argparse
import asyncio

from core.config import Settings
from service.commands.common import migrate


def add_arguments(p: argparse.ArgumentParser) -> None:
    from importer.cli import add_arguments as add

    add(p)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from importer.cli import run as import_run

    asyncio.run(migrate(settings, retry_for=0))
    return import_run(args)
