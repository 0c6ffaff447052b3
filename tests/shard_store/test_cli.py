"""`soimctl shards` and `soimctl bench store` end to end (in process, real databases)."""

from __future__ import annotations

import json

import pytest

from shard_store import LATEST, BatchWriter, Store
from shard_store.schema import TABLES
from tests.shard_store.conftest import msg
from tools import soimctl


def test_shards_reports_version_and_counts(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with BatchWriter(store) as writer:
        for f in writer.submit_many([msg(c, 1) for c in (1, 2, 9)]):
            f.result(10)
    monkeypatch.setenv("SOIM_DB", db_url)
    monkeypatch.setenv("SOIM_SHARDS", "8")
    assert soimctl.main(["shards", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (db,) = data["databases"]
    assert db["schema_version"] == LATEST == data["schema_latest"]
    counts = {t["table"]: t["rows"] for t in db["tables"]}
    assert len(counts) == len(TABLES) * 8
    assert (counts["message_1"], counts["message_2"], counts["message_0"]) == (2, 1, 0)
    assert soimctl.main(["shards"]) == 0
    text = capsys.readouterr().out
    assert f"schema v{LATEST} of v{LATEST}" in text
    assert any(line.split()[:2] == ["message", "3"] for line in text.splitlines())


@pytest.mark.timeout(90)
def test_bench_store_prints_its_figures(
    backend: str, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOIM_DB", db_url)  # an empty mysql:// database is used as it is
    assert soimctl.main(["bench", "store", "--json", "--backend", backend, "--rows", "3000"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == backend and result["rows"] == 3000
    assert result["rows_per_s"] > 0 and result["ceiling_rows_per_s"] > 0
    assert result["ratio"] == round(result["rows_per_s"] / result["ceiling_rows_per_s"], 3)
    with Store.open(db_url, 8) as store:
        assert sum(c.rows for c in store.row_counts()) == 0  # it cleans up after itself
