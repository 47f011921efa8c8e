"""``events bench``: load the service and report events/s (``bench/harness.py``)."""

from __future__ import annotations

import argparse

from core.config import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    from bench.harness import add_arguments as add

    add(p)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from bench.harness import run as bench_run

    return bench_run(args)
