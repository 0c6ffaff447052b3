"""Fixtures of the cluster tests: the database backends a cluster runs on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL


@pytest.fixture(params=["sqlite", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SOIM_DB for a test cluster: embedded SQLite, or a fresh MariaDB database."""
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'data'}"
    else:
        yield request.getfixturevalue("mysql_db")


@pytest.fixture(params=["no-redis", "redis"])
def redis_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Extra SOIM_* settings: none, or Redis with a key prefix of this test's own."""
    if request.param == "no-redis":
        return {}
    prefix = request.getfixturevalue("redis_prefix")
    return {"SOIM_REDIS_URL": REDIS_URL, "SOIM_REDIS_PREFIX": prefix}
