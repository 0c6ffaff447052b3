"""Fixtures of the cluster tests: the database backends a cluster runs on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SOIM_DB for a test cluster: embedded SQLite, or a fresh MariaDB database."""
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'data'}"
    else:
        yield request.getfixturevalue("mysql_db")
