"""The documentation stays true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from core.config import SETTINGS, settings_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented_in_the_readme() -> None:
    for setting in SETTINGS:
        assert f"| `{setting.env}` |" in README, f"{setting.env} missing from README.md"
    assert settings_markdown() in README, "README table differs: run `events config --markdown`"


def test_quick_start_gives_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick_start, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "exec make test" in ci


def test_architecture_names_modules_that_exist() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for path in set(
        re.findall(r"(?<![\w/])((?:ingest|pipeline|storage|core)/[\w/]+\.(?:py|sql))", doc)
    ):
        if "*" not in path:
            assert (ROOT / path).exists(), f"docs/architecture.md names missing {path}"
