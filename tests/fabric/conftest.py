"""Fixtures of the fabric tests: a keys dir and the environment of a test cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import keys


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    """Freshly generated cluster and gateway keys."""
    path = tmp_path / "keys"
    keys.generate(path)
    return path


@pytest.fixture
def cluster_env(cluster_name: str, keys_dir: Path) -> dict[str, str]:
    """SOIM_* variables for the nodes of one test cluster."""
    return {"SOIM_CLUSTER": cluster_name, "SOIM_KEYS_DIR": str(keys_dir),
            "SOIM_LOG_LEVEL": "INFO"}
