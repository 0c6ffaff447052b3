"""`soimctl history purge` on real databases (MariaDB and SQLite): batched, with progress,
seqs intact, errors as JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shard_store import BatchWriter, MessageRow, Store
from shard_store.purge import BATCH_ROWS
from tests.shard_store.conftest import stored_messages
from tools import soimctl

OLD_MS = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1000)
NEW_MS = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)
BIG, SMALL = 11, 12  # two conversations, in different shards


def _row(conv: int, seq: int, ts: int) -> MessageRow:
    return MessageRow(conv, seq, conv * 100_000 + seq, 7, f"c{seq}", ts, f"body {seq} ✓")


def _fill(store: Store) -> None:
    """BIG: 2,500 old messages then 10 new; SMALL: 5 old then 5 new; last_seq recorded."""
    rows = [_row(BIG, s, OLD_MS + s) for s in range(1, 2501)]
    rows += [_row(BIG, s, NEW_MS + s) for s in range(2501, 2511)]
    rows += [_row(SMALL, s, OLD_MS + s) for s in range(1, 6)]
    rows += [_row(SMALL, s, NEW_MS + s) for s in range(6, 11)]
    with BatchWriter(store) as writer:
        for f in writer.submit_many(rows):
            f.result(30)
    for conv, last in ((BIG, 2510), (SMALL, 10)):
        store.execute(
            "conversation",
            conv,
            "INSERT INTO {t} (conv_id, kind, last_seq, created) VALUES (%s, 'direct', %s, 0)",
            (conv, last),
        )


def _purge(
    args: list[str],
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, list[dict]]:
    monkeypatch.setenv("SOIM_DB", db_url)
    monkeypatch.setenv("SOIM_SHARDS", "8")
    status = soimctl.main(["history", "purge", *args, "--json"])
    return status, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.timeout(60)
def test_purge_deletes_old_messages_in_batches_and_keeps_seqs(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(store)
    status, lines = _purge(["--before", "2024-01-01"], db_url, monkeypatch, capsys)
    assert status == 0
    *progress, final = lines
    assert final["deleted"] == 2505 and final["before"] == "2024-01-01T00:00:00+00:00"
    assert all(0 < p["deleted"] <= BATCH_ROWS for p in progress)
    assert [p["deleted"] for p in progress if p["table"].startswith("message_3")] == [
        1000,
        1000,
        500,
    ]
    assert progress[-1]["total"] == 2505
    left = stored_messages(store)
    assert {(m.conv_id, m.seq) for m in left} == (
        {(BIG, s) for s in range(2501, 2511)} | {(SMALL, s) for s in range(6, 11)}
    )
    last = {
        conv: store.query(
            "conversation", conv, "SELECT last_seq FROM {t} WHERE conv_id = %s", (conv,)
        )[0][0]
        for conv in (BIG, SMALL)
    }
    assert last == {BIG: 2510, SMALL: 10}  # seqs go on from where they were
    with BatchWriter(store) as writer:
        assert writer.submit(_row(BIG, 2511, NEW_MS + 2511)).result(10).seq == 2511


def test_purge_one_conversation_and_errors(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(store)
    status, lines = _purge(
        ["--before", "2024-01-01T02:00:00+02:00", "--conv", str(SMALL)], db_url, monkeypatch, capsys
    )
    assert status == 0
    assert lines[-1] == {
        "deleted": 5,
        "before": "2024-01-01T00:00:00+00:00",
        "before_ms": 1704067200000,
        "conv": SMALL,
    }
    convs = [m.conv_id for m in stored_messages(store)]
    assert (convs.count(BIG), convs.count(SMALL)) == (2510, 5)
    status, lines = _purge(["--before", "last tuesday"], db_url, monkeypatch, capsys)
    assert status == 2 and lines[0]["error"] == "BAD_ARGUMENT"
    assert "YYYY-MM-DD" in lines[0]["detail"]
    status, lines = _purge(["--before", "2024-01-01", "--conv", "x"], db_url, monkeypatch, capsys)
    assert status == 2 and lines[0]["error"] == "BAD_ARGUMENT"
    monkeypatch.setenv("SOIM_DB", db_url)
    assert soimctl.main(["history", "purge", "--before", "2030-01-01"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "deleted 2515 messages older than 2030-01-01T00:00:00+00:00"
    assert out[0].startswith("message_") and "so far" in out[0]
