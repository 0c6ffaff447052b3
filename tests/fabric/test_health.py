"""Health endpoints, JSON logs and unknown settings, on real node processes.

A gateway alone serves /healthz but is not ready (its /readyz names the roles it lacks); once a
directory, a router and a storage node are up every one of them is ready; other paths are 404.
A node started with SOIM_LOG_FORMAT=json writes one JSON object per line, and a misspelled
SOIM_SHARD is reported with the name it was meant to be. The list of known settings covers
every SOIM_* name the source reads.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fabric import settings, timing
from fabric.config import Config, ConfigError
from fabric.readiness import DbCheck
from shard_store.store import Store
from tests.harness import running_cluster
from tests.support import async_wait_until, free_port

ROOT = Path(__file__).resolve().parents[2]
PY_DIRS = ("fabric", "nodes", "tools", "tui", "shard_store", "tests")
OTHER_FILES = ("Procfile", "Makefile")
QUOTED_NAME = re.compile(r"[\"'](SOIM_[A-Z0-9_]+)[\"'=]")
ANY_NAME = re.compile(r"SOIM_[A-Z0-9_]+")


def _get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def _fetch(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, port, path)


@pytest.mark.timeout(60)
def test_readiness_follows_what_each_role_needs(tmp_path: Path, cluster_name: str) -> None:
    asyncio.run(_readiness_scenario(tmp_path, cluster_name))


async def _readiness_scenario(tmp_path: Path, cluster_name: str) -> None:
    async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path / 'data'}") as cluster:
        ports = {role: free_port() for role in ("gateway", "directory", "router", "storage")}
        gateway = cluster.start(
            "gateway",
            SOIM_METRICS_PORT=str(ports["gateway"]),
            SOIM_LOG_FORMAT="json",
            SOIM_SHARD="6",
        )
        await cluster.wait_alive(gateway)
        gp = ports["gateway"]
        assert await _fetch(gp, "/healthz") == (200, "ok\n")
        assert await _fetch(gp, "/readyz") == (
            503,
            "no live directory, router, storage in the membership\n",
        )
        status, body = await _fetch(gp, "/nope")
        assert status == 404 and "/readyz" in body
        status, body = await _fetch(gp, "/metrics")
        assert status == 200 and "soim_frames_in_total" in body

        others = [
            *cluster.start("directory", SOIM_METRICS_PORT=str(ports["directory"])),
            *cluster.start("router", SOIM_METRICS_PORT=str(ports["router"])),
            *cluster.start("storage", SOIM_METRICS_PORT=str(ports["storage"])),
        ]
        await cluster.wait_alive(others)
        for role, port in ports.items():
            await async_wait_until(lambda p=port: _ready(p), timeout=10, what=f"{role} ready")

        log_lines = [line for line in gateway[0].log().splitlines() if line.strip()]
        records = [json.loads(line) for line in log_lines]  # every line is one JSON object
        assert all({"ts", "level", "node", "logger", "msg"} <= r.keys() for r in records)
        assert {r["node"] for r in records} == {gateway[0].node_id}
        assert {
            "level": "WARNING",
            "msg": "SOIM_SHARD: unknown setting; did you mean SOIM_SHARDS?",
        }.items() <= next(r for r in records if "SOIM_SHARD" in r["msg"]).items()


async def _ready(port: int) -> bool:
    return await _fetch(port, "/readyz") == (200, "ready\n")


def test_database_check_reports_a_database_that_does_not_answer(tmp_path: Path) -> None:
    asyncio.run(_database_scenario(tmp_path))


async def _database_scenario(tmp_path: Path) -> None:
    store = await asyncio.to_thread(Store.open, f"sqlite:{tmp_path / 'data'}", 2)
    check = DbCheck(store.ping)
    assert await check.reason() is None
    await asyncio.to_thread(store.close)
    assert await check.reason() is None  # the answer is reused for DB_CHECK_CACHE_S
    reason = await async_wait_until(
        check.reason, timeout=timing.DB_CHECK_CACHE_S + 5, what="the closed store reported"
    )
    assert reason.startswith("database does not answer: ") and "\n" not in reason


def test_log_format_is_validated() -> None:
    assert Config.from_env({"SOIM_LOG_FORMAT": "JSON"}).log_format == "json"
    assert Config.from_env({}).log_format == "text"
    with pytest.raises(ConfigError, match=r"^SOIM_LOG_FORMAT: must be text or json"):
        Config.from_env({"SOIM_LOG_FORMAT": "xml"})


def test_unknown_settings_name_the_closest_known_one() -> None:
    env = {
        "SOIM_SHARD": "6",
        "SOIM_DB": "sqlite:x",
        "SOIM_REDIS_UR": "",
        "SOIM_WHATEVER": "1",
        "PATH": "/bin",
    }
    assert settings.unknown(env) == [
        "SOIM_REDIS_UR: unknown setting; did you mean SOIM_REDIS_URL?",
        "SOIM_SHARD: unknown setting; did you mean SOIM_SHARDS?",
        "SOIM_WHATEVER: unknown setting; see docs/operations.md",
    ]


def test_every_setting_the_source_reads_is_known() -> None:
    """A SOIM_* name quoted in the Python source, or used in the Procfile or Makefile, is in
    `settings.KNOWN` (this file's deliberate misspellings aside)."""
    read: dict[str, str] = {}
    for top in PY_DIRS:
        for path in (ROOT / top).rglob("*.py"):
            if path == Path(__file__).resolve():
                continue
            for name in QUOTED_NAME.findall(path.read_text(errors="replace")):
                read.setdefault(name, str(path.relative_to(ROOT)))
    for other in OTHER_FILES:
        path = ROOT / other
        if path.exists():
            for name in ANY_NAME.findall(path.read_text()):
                read.setdefault(name, other)
    missing = {name: where for name, where in read.items() if name not in settings.KNOWN}
    assert not missing, f"add to fabric/settings.py KNOWN: {missing}"
