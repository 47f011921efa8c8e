"""The oracle's cases (tests/analytics/test_oracle.py) through the other ways of answering.

By default a query the user sets can answer is answered from them; these runs turn them off
(the SQL over the lake files and the hot mirror's rows), and the mirror too (the SQL over
the rows PostgreSQL selects), so every path is held to the same brute-force answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from falcon import testing

from core.config import Settings
from service.app import create_app
from storage.lake import Lake
from tests.analytics.test_oracle import (
    ACTIVE_CASES,
    BREAKDOWN_CASES,
    COHORT_CASES,
    DATASET,
    DAU_CASES,
    FUNNEL_CASES,
    RETENTION_CASES,
    TOP_CASES,
    Service,
    check,
    store,
)
from tests.conftest import API_KEY

PATHS = {
    "mirror_sql": {"user_index_users": 0},
    "postgres_sql": {"user_index_users": 0, "hot_mirror_rows": 0},
}


@pytest.fixture(params=[(p, s) for p in PATHS for s in ("hot", "split", "cold")], ids=str)
async def other_path(
    request: pytest.FixtureRequest, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> AsyncIterator[Service]:
    path, state = request.param
    s = settings.with_overrides(lake_dir=str(tmp_path / "lake"), **PATHS[path])
    await store(s, Lake(s.lake_dir), DATASET, state)
    async with testing.ASGIConductor(create_app(s), headers={"X-API-Key": API_KEY}) as c:
        yield Service(f"{path}/{state}", c)


async def test_every_case_without_the_sets(other_path: Service) -> None:
    await check(
        other_path,
        [
            *DAU_CASES,
            *TOP_CASES,
            *RETENTION_CASES,
            *FUNNEL_CASES,
            *ACTIVE_CASES,
            *COHORT_CASES,
            *BREAKDOWN_CASES,
        ],
    )
