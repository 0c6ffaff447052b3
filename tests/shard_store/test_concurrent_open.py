"""Nodes started together (make run) open and migrate one fresh SQLite folder at once: every
process gets a working, migrated store — none fails with "database is locked"."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from shard_store import Store


def _open(folder: str, results: mp.Queue) -> None:  # type: ignore[type-arg]
    try:
        with Store.open(f"sqlite:{folder}", 8) as store:
            results.put(("ok", store.schema_versions()))
    except Exception as err:  # reported to the test, which fails on it
        results.put(("error", str(err)))


@pytest.mark.timeout(60)
def test_six_processes_open_one_fresh_sqlite_folder_at_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_open, args=(str(tmp_path / "data"), results)) for _ in range(6)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=40) for _ in procs]
    for proc in procs:
        proc.join(10)
    assert [o[0] for o in outcomes] == ["ok"] * 6, outcomes
