"""A newcomer follows the README's quick start literally, in a clean checkout.

The two commands are read from the README itself (not copied here); the run command is
started in a fresh clone with its own virtual environment, pointed at this run's database
and queues through the environment variables the README says to use, and must serve
events end to end. The test command is the one `.ci/run` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from core.config import Settings
from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert block, "the quick start has no sh block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_gives_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    commands = quick_start_commands()
    assert commands == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\s*(exec\s+)?make test\s*$", ci, flags=re.MULTILINE)


async def test_the_run_command_works_in_a_clean_checkout(
    settings: Settings, tmp_path: Path
) -> None:
    run_command = quick_start_commands()[0]
    checkout = tmp_path / "checkout"
    await asyncio.to_thread(
        subprocess.run,
        ["git", "clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(checkout)],
        check=True,
        timeout=120,
    )
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "API_KEY", "PROMETHEUS"))
    }
    env.update(
        DATABASE_URL=settings.database_url,
        RABBITMQ_URL=settings.rabbitmq_url,
        REDIS_URL=settings.redis_url,
        EVENTS_QUEUE_PREFIX=settings.queue_prefix,
        EVENTS_BIND=f"127.0.0.1:{port}",
        PATH=":".join(p for p in env.get("PATH", "").split(":") if "/.venv/" not in p),
    )
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(  # noqa: ASYNC220 - the service runs for the whole test
        run_command.split(),
        cwd=checkout,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 420  # creating the venv and installing takes a while
        ready = False
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(httpx.TransportError):
                    ready = (await http.get("/readyz")).status_code == 200
                if ready:
                    break
                await asyncio.sleep(0.5)
            assert ready, (tmp_path / "run.log").read_text()[-3000:]
            key = (checkout / ".api_key").read_text().strip()
            assert key in (tmp_path / "run.log").read_text()  # make run tells the user the key
            answer = await http.post(
                "/events?wait=true&timeout=20",
                json=[
                    {
                        "event_id": "5f0c6a2e-8d4b-4d0e-9a51-3b1f2c4d5e6f",
                        "occurred_at": "2025-08-21T06:52:34+03:00",
                        "user_id": 42,
                        "event_type": "purchase",
                        "properties": {"country": "UA"},
                    }
                ],
                headers={"X-API-Key": key},
            )
            docs = await http.get("/docs")
        assert answer.status_code == 200, answer.text
        assert (answer.json()["inserted"], answer.json()["duplicates"]) == (1, 0)
        assert docs.status_code == 200
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as the README says
        code = proc.wait(timeout=60)
        log.close()
    text = (tmp_path / "run.log").read_text()
    # make reports the interrupt itself (status 2 or the signal); the service must have
    # stopped cleanly under it.
    assert code in (0, 2, -signal.SIGINT), text[-3000:]
    assert "worker stopped" in text, text[-3000:]
    assert "SIGSEGV" not in text and "Traceback" not in text, text[-3000:]
