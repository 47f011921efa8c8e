"""``events config``: the effective configuration, secrets hidden; or the README's table."""

from __future__ import annotations

import argparse

from core.config import SETTINGS, Settings, settings_env_example, settings_markdown
from core.redact import redact_url


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--markdown", action="store_true", help="print the README's settings table")
    p.add_argument(
        "--env-example", action="store_true", help="print .env.example (every setting, defaults)"
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_markdown())
        return 0
    if args.env_example:
        print(settings_env_example(), end="")
        return 0
    for s in SETTINGS:
        value = getattr(settings, s.attr)
        if s.env in {"API_KEY", "API_KEYS"}:
            value = f"<{len(settings.api_keys)} key(s)>" if value else "<unset>"
        elif s.env.endswith("_URL"):
            value = redact_url(str(value))
        print(f"{s.env}={value}")
    return 0
