"""Shared fixtures: unique cluster names, keys, a throwaway MariaDB database, a Redis prefix.

A missing MariaDB or Redis fails the run: these fixtures never skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import redis

from fabric import keys

MYSQL = dict(
    host=os.environ.get("SOIM_TEST_MYSQL_HOST", "127.0.0.1"),
    port=int(os.environ.get("SOIM_TEST_MYSQL_PORT", "3306")),
    user=os.environ.get("SOIM_TEST_MYSQL_USER", "root"),
    password=os.environ.get("SOIM_TEST_MYSQL_PASSWORD", ""),
)
REDIS_URL = os.environ.get("SOIM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MYSQL_FIXTURES = frozenset({"mysql_db", "mysql_dbs"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `mysql` every test that uses MariaDB: by fixture, or by a "mysql" parameter.

    So `pytest -m "not mysql"` runs everything that needs no MariaDB; `_needs_mark` fails a
    test that reaches MariaDB some other way without the mark.
    """
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec else ()
        if MYSQL_FIXTURES & set(getattr(item, "fixturenames", ())) or "mysql" in params:
            item.add_marker(pytest.mark.mysql)


def _needs_mark(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("mysql") is None:
        pytest.fail(f"{request.node.nodeid} uses MariaDB: mark it mysql", pytrace=False)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    """Freshly generated cluster and gateway keys."""
    path = tmp_path / "keys"
    keys.generate(path)
    return path


@pytest.fixture
def cluster_env(cluster_name: str, keys_dir: Path) -> dict[str, str]:
    """SOIM_* variables for the nodes of one test cluster."""
    return {"SOIM_CLUSTER": cluster_name, "SOIM_KEYS_DIR": str(keys_dir), "SOIM_LOG_LEVEL": "INFO"}


@pytest.fixture(autouse=True)
def private_config_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every soim a test starts keeps its remembered logins and gateway keys in a config dir of
    the test's own (XDG_CONFIG_HOME), never in the user's ~/.config/soim."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


@pytest.fixture
def cluster_name() -> str:
    """A cluster name no other test uses, so discovery never crosses tests."""
    return f"t{uuid.uuid4().hex[:12]}"


def _mysql_url(db: str) -> str:
    auth = MYSQL["user"] + (f":{MYSQL['password']}" if MYSQL["password"] else "")
    return f"mysql://{auth}@{MYSQL['host']}:{MYSQL['port']}/{db}"


@pytest.fixture
def mysql_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database soim_test_<random>, as a SOIM_DB URL; dropped afterwards."""
    _needs_mark(request)
    name = f"soim_test_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(**MYSQL, autocommit=True)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        yield _mysql_url(name)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture
def mysql_dbs(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Two fresh databases, for sharding across databases; dropped afterwards."""
    _needs_mark(request)
    names = [f"soim_test_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    conn = pymysql.connect(**MYSQL, autocommit=True)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f"CREATE DATABASE `{name}`")
        yield [_mysql_url(n) for n in names]
    finally:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"soimtest:{uuid.uuid4().hex[:10]}:"
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        client.close()
