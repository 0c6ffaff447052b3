"""`soimctl export` / `soimctl import`: SQLite → MariaDB → SQLite (another shard layout) gives
the same rows, file by file; the id allocator continues past imported ids; a real cluster moves
from SQLite to MariaDB and its users carry on; refusals as JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from nodes.directory import account_rows, friend_rows, group_rows
from shard_store import BatchWriter, MessageRow, SegmentAllocator, Store
from shard_store.dump import DATA_TABLES, holdings
from tests.harness import running_cluster
from tools import soimctl
from tui.session import ClientSession

T0 = 1_700_000_000_000
PASSWORD = "correct horse"


def _fill(store: Store) -> dict[str, int]:
    """Users, friendships, groups, conversations, cursors and messages, written by the
    directory's row functions and the batch writer (conversation and cursor rows as the
    storage node writes them)."""
    ids = SegmentAllocator(store)
    try:
        users = {
            name: account_rows.create(
                store,
                ids,
                name,
                f"Nick “{name}” ✓",
                f"$argon2id$v=19$m=65536,t=3,p=4${name}",
                T0 + i,
            ).user_id
            for i, name in enumerate(["alice", "bob", "carol", "dave", "émile", "zoë"])
        }
        account_rows.set_disabled(store, users["dave"], True)
        friend_rows.add(store, ids, users["alice"], users["bob"], T0)
        _, direct = friend_rows.add(store, ids, users["bob"], users["alice"], T0 + 1)
        friend_rows.add(store, ids, users["carol"], users["alice"], T0 + 2)  # stays pending
        group = group_rows.create(store, ids, users["alice"], "ops", 50, 2, 2, T0).group_id
        group_rows.invite(store, group, users["alice"], users["bob"], T0 + 3)  # invite-only
        group_rows.join(store, group, users["bob"], T0 + 3)
        group_rows.invite(store, group, users["alice"], users["zoë"], T0 + 4)
        other = group_rows.create(store, ids, users["carol"], "δ-team", 500, 1, 1, T0).group_id
        msg_ids = ids.next_ids("msg", 1300)
    finally:
        ids.close()
    rows = [
        MessageRow(
            direct,
            s,
            msg_ids[s - 1],
            users["alice" if s % 2 else "bob"],
            f"m{s}",
            T0 + s,
            f'line {s}: "quoted" \\ tab\t😀',
        )
        for s in range(1, 1201)
    ]
    rows += [
        MessageRow(group, s, msg_ids[1199 + s], users["bob"], f"g{s}", T0 + s, "hi group")
        for s in range(1, 101)
    ]
    with BatchWriter(store) as writer:
        for f in writer.submit_many(rows):
            f.result(30)
    for conv, kind, last in ((direct, "direct", 1200), (group, "group", 100), (other, "group", 0)):
        store.execute(
            "conversation",
            conv,
            "INSERT INTO {t} (conv_id, kind, last_seq, created) VALUES (%s, %s, %s, %s)",
            (conv, kind, last, T0),
        )
    for user, conv, read in (
        (users["alice"], direct, 1200),
        (users["bob"], direct, 900),
        (users["bob"], group, 100),
    ):
        store.execute(
            "cursor",
            user,
            "INSERT INTO {t} (user_id, conv_id, read_seq, delivered_seq) VALUES (%s, %s, %s, %s)",
            (user, conv, read, read),
        )
    return users


def _ctl(
    args: list[str],
    db: str,
    shards: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("SOIM_DB", db)
    monkeypatch.setenv("SOIM_SHARDS", str(shards))
    status = soimctl.main([*args, "--json"])
    return status, json.loads(capsys.readouterr().out)


def _files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in folder.glob("*.jsonl")}


@pytest.mark.mysql
@pytest.mark.timeout(60)
def test_round_trip_sqlite_mysql_sqlite(
    tmp_path: Path,
    mysql_db: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = f"sqlite:{tmp_path / 'first'}"
    with Store.open(first, 8) as store:
        users = _fill(store)
    status, out = _ctl(["export", str(tmp_path / "a")], first, 8, monkeypatch, capsys)
    assert status == 0 and out["source"] == "sqlite"
    assert {
        k: out["tables"][k]
        for k in ("account", "friend", "group", "group_member", "group_pass", "message", "cursor")
    } == {
        "account": 6,
        "friend": 4,
        "group": 2,
        "group_member": 3,
        "group_pass": 2,
        "message": 1300,
        "cursor": 3,
    }
    status, out = _ctl(["import", str(tmp_path / "a")], mysql_db, 8, monkeypatch, capsys)
    assert status == 0 and (out["source"], out["target"]) == ("sqlite", "mysql")
    assert _ctl(["export", str(tmp_path / "b")], mysql_db, 8, monkeypatch, capsys)[0] == 0
    last = f"sqlite:{tmp_path / 'last'}"  # back, into another shard layout
    assert _ctl(["import", str(tmp_path / "b")], last, 4, monkeypatch, capsys)[0] == 0
    assert _ctl(["export", str(tmp_path / "c")], last, 4, monkeypatch, capsys)[0] == 0
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert set(a) == {f"{t}.jsonl" for t in (*DATA_TABLES, "id_segment")}
    for name in a:
        if name != "id_segment.jsonl":
            assert a[name] == b[name] == c[name], name  # every row, every column
    alice = json.loads(a["account.jsonl"].splitlines()[0])
    assert alice["account"] == "alice" and alice["pw_hash"].startswith("$argon2id$")
    with Store.open(mysql_db, 8) as store:
        assert account_rows.credentials(store, "émile").user_id == users["émile"]
        assert [f.accepted for f in friend_rows.of_user(store, users["carol"])] == [False]
        ids = SegmentAllocator(store)
        try:  # new ids come after every imported one
            assert ids.next_id("user") > max(users.values())
            assert ids.next_id("conv") > max(
                json.loads(line)["conv_id"] for line in a["conversation.jsonl"].splitlines()
            )
            assert ids.next_id("msg") > max(
                json.loads(line)["msg_id"] for line in a["message.jsonl"].splitlines()
            )
        finally:
            ids.close()


def test_refusals_are_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:{tmp_path / 'db'}"
    with Store.open(db, 8) as store:
        ids = SegmentAllocator(store)
        try:
            account_rows.create(store, ids, "alice", "", "hash", T0)
        finally:
            ids.close()
    assert _ctl(["export", str(tmp_path / "x")], db, 8, monkeypatch, capsys)[0] == 0
    status, out = _ctl(["import", str(tmp_path / "x")], db, 8, monkeypatch, capsys)
    assert status == 2 and out["error"] == "NOT_EMPTY" and "account" in out["detail"]
    status, out = _ctl(["export", str(tmp_path / "x")], db, 8, monkeypatch, capsys)
    assert status == 2 and out["error"] == "DIR_NOT_EMPTY"
    empty = f"sqlite:{tmp_path / 'empty'}"
    status, out = _ctl(["import", str(tmp_path / "nowhere")], empty, 8, monkeypatch, capsys)
    assert status == 2 and out["error"] == "BAD_EXPORT"
    (tmp_path / "x" / "user.jsonl").write_text('{"user_id": 1}\n', encoding="utf-8")
    status, out = _ctl(["import", str(tmp_path / "x")], empty, 8, monkeypatch, capsys)
    assert status == 2 and out["error"] == "BAD_EXPORT" and "user.jsonl:1" in out["detail"]
    with Store.open(empty, 8) as store:
        assert holdings(store) == []  # every file is checked before the first row is loaded


async def _pages(client: ClientSession, conv_id: int) -> list[tuple[int, int, int, str]]:
    """(seq, msg_id, sender, body) of the whole conversation, paged forward."""
    out: list[tuple[int, int, int, str]] = []
    while True:
        page = await client.history(conv_id, after_seq=out[-1][0] if out else 0, limit=100)
        out += [(m.seq, m.msg_id, m.sender, m.body) for m in page.messages]
        if not page.more:
            return out


@pytest.mark.mysql
@pytest.mark.timeout(90)
def test_a_cluster_moves_from_sqlite_to_mariadb(
    tmp_path: Path,
    cluster_name: str,
    mysql_db: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = f"sqlite:{tmp_path / 'old'}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    async def before() -> dict[str, Any]:
        async with running_cluster(tmp_path / "a", cluster_name, old) as cluster:
            await cluster.start_all()
            alice, bob = await cluster.client(), await cluster.client()
            a = (await alice.register("alice", PASSWORD, nickname="Alice")).user_id
            b = (await bob.register("bob", PASSWORD)).user_id
            await alice.add_friend(b)
            direct = (await bob.add_friend(a)).conv_id
            for i in range(30):
                await (alice if i % 3 else bob).send(f"message {i} ✓", to_user=b if i % 3 else a)
            group = (await alice.group_create("crew")).group.group_id
            await bob.group_join(group)
            await bob.send("hello crew", to_group=group)
            return {
                "a": a,
                "b": b,
                "direct": direct,
                "group": group,
                "history": await _pages(bob, direct),
                "crew": await _pages(alice, group),
            }

    async def after(was: dict[str, Any]) -> None:
        async with running_cluster(tmp_path / "b", cluster_name + "-b", mysql_db) as cluster:
            await cluster.start_all()
            alice, bob = await cluster.client(), await cluster.client()
            assert (await alice.login("alice", PASSWORD)).user_id == was["a"]  # hash kept
            assert (await bob.login("bob", PASSWORD)).user_id == was["b"]
            assert await _pages(bob, was["direct"]) == was["history"]
            assert await _pages(alice, was["group"]) == was["crew"]
            friends = (await alice.friends()).friends
            assert [(f.user_id, f.conv_id) for f in friends] == [(was["b"], was["direct"])]
            assert [g.group_id for g in (await bob.groups()).groups] == [was["group"]]
            ack = await alice.send("after the move", to_user=was["b"])
            assert (ack.conv_id, ack.seq) == (was["direct"], 31)  # seqs go on
            assert ack.msg_id > max(m[1] for m in was["history"])
            carol = await cluster.client()
            assert (await carol.register("carol", PASSWORD)).user_id > was["b"]

    was = asyncio.run(before())
    assert _ctl(["export", str(tmp_path / "dump")], old, 8, monkeypatch, capsys)[0] == 0
    status, out = _ctl(["import", str(tmp_path / "dump")], mysql_db, 8, monkeypatch, capsys)
    assert status == 0 and out["tables"]["message"] == 31
    asyncio.run(after(was))
