"""Messaging through real processes (directory, routers, storage, gateways) on SQLite and
MariaDB: every member sees one order with seqs contiguous from 1, live and in History; a retried
send is stored once; an offline user's unread counts and History; receipts; group read counts;
and nothing acknowledged is lost or duplicated when the writer's database connection is killed
mid-flush or the storage node is killed -9 with sends in flight."""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.request
from pathlib import Path

import pymysql
import pytest

from fabric.ring import Ring
from schema import client_pb2
from shard_store import Store
from shard_store.backend import parse_db_urls
from tests.conftest import MYSQL
from tests.harness import Cluster, running_cluster
from tests.shard_store.conftest import stored_messages
from tests.support import async_wait_until, wait_until
from tui.session import ClientSession, EventKind

PASSWORD = "correct horse"
OFFLINE = 1000
"""Messages a user receives while logged out."""
UNTHROTTLED = {"SOIM_SESSION_RATE": "100000", "SOIM_SESSION_BURST": "100000"}
"""Gateways that let one user send OFFLINE messages at once: at the default 50/s, sending them
took 25 of the test's 30 s, waiting out the rate limit (tests/cluster/test_session_limits.py
and test_gateway.py prove the limit)."""
Key = tuple[int, int, str]


class Member:
    """A logged-in client and what it has seen: raw message pushes, and the session's ordered
    stream of messages (pushes with gaps filled from History)."""

    def __init__(self, client: ClientSession) -> None:
        self.client = client
        assert client.user is not None
        self.id = client.user.user_id
        self.pushes: list[client_pb2.Push] = []
        self._seen: list[client_pb2.ChatMessage] = []
        inner = client.link.on_push

        def record(push: client_pb2.Push) -> None:
            self.pushes.append(push)
            inner(push)

        client.link.on_push = record

    def pushed(self, conv_id: int) -> list[int]:
        """Seqs of the message pushes of a conversation, in arrival order."""
        return [
            p.message.seq
            for p in self.pushes
            if p.WhichOneof("item") == "message" and p.message.conv_id == conv_id
        ]

    def receipts(self, conv_id: int) -> list[client_pb2.Receipt]:
        return [
            p.receipt
            for p in self.pushes
            if p.WhichOneof("item") == "receipt" and p.receipt.conv_id == conv_id
        ]

    def seen(self, conv_id: int) -> list[client_pb2.ChatMessage]:
        """The session's ordered stream for a conversation (empties its event queue)."""
        events = self.client.events
        while not events.empty():
            event = events.get_nowait()
            if event.kind is EventKind.MESSAGE and event.message is not None:
                self._seen.append(event.message)
        return [m for m in self._seen if m.conv_id == conv_id]


async def register(cluster: Cluster, account: str, gateway: int) -> Member:
    client = await cluster.client(gateway, device=f"{account}-1")
    await client.register(account, PASSWORD)
    return Member(client)


async def login(cluster: Cluster, account: str, gateway: int, device: str) -> Member:
    client = await cluster.client(gateway, device=device)
    await client.login(account, PASSWORD)
    return Member(client)


async def befriend(a: Member, b: Member) -> int:
    await a.client.add_friend(b.id)
    return (await b.client.add_friend(a.id)).conv_id


async def history(m: Member, conv_id: int) -> list[client_pb2.ChatMessage]:
    """The whole conversation, paged forward."""
    out: list[client_pb2.ChatMessage] = []
    while True:
        page = await m.client.history(conv_id, after_seq=out[-1].seq if out else 0, limit=100)
        out += page.messages
        if not page.more:
            return out


def view(msgs: list[client_pb2.ChatMessage]) -> list[tuple[int, int, int, str]]:
    return [(m.seq, m.msg_id, m.sender, m.body) for m in msgs]


async def start_cluster(
    cluster: Cluster, storage: int = 1, routers: int = 2, gateways: int = 2
) -> None:
    nodes = (
        cluster.start("directory")
        + cluster.start("router", routers)
        + cluster.start("storage", storage)
        + cluster.start("gateway", gateways)
    )
    await cluster.wait_alive(nodes)


@pytest.mark.timeout(150)
def test_one_order_for_everyone_history_unread_receipts_and_read_counts(
    tmp_path: Path, cluster_name: str, db_url: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, db_url, UNTHROTTLED) as cluster:
            await start_cluster(cluster)
            people = [await register(cluster, f"user{i:02d}", i % 2) for i in range(20)]
            alice, bob, dave = people[0], people[1], people[2]
            alice2 = await login(cluster, "user00", 1, "alice-2")
            ab = await befriend(alice, bob)
            ad = await befriend(alice, dave)

            # 1:1, both sending at once: one order, seqs 1..20, pushed to every other session
            sends = [alice.client.send(f"a{i}", to_user=bob.id) for i in range(10)]
            sends += [bob.client.send(f"b{i}", to_user=alice.id) for i in range(10)]
            acks = await asyncio.gather(*sends)
            assert sorted(a.seq for a in acks) == list(range(1, 21))
            assert all(a.conv_id == ab and not a.duplicate for a in acks)
            for m in (alice, alice2, bob):
                await async_wait_until(lambda m=m: len(m.seen(ab)) == 20, what="20 messages")
            stored = await history(bob, ab)
            assert [m.seq for m in stored] == list(range(1, 21))
            for m in (alice, alice2, bob):
                assert view(m.seen(ab)) == view(stored)
            assert alice2.pushed(ab) == list(range(1, 21))  # the other device: every push
            assert bob.pushed(ab) == [m.seq for m in stored if m.sender == alice.id]
            assert {m.to_user for m in stored if m.sender == alice.id} == {bob.id}

            # a retried send: stored once, acked with the same seq and msg_id
            first = await alice.client.send("once", to_user=bob.id, client_msg_id="retry-1")
            again = await alice.client.send("once", to_user=bob.id, client_msg_id="retry-1")
            assert (again.seq, again.msg_id, again.duplicate) == (first.seq, first.msg_id, True)
            assert not first.duplicate and first.seq == 21
            assert [m.seq for m in await history(alice, ab)] == list(range(1, 22))

            # a group of 20 with five senders at once
            group = (await alice.client.group_create("storage-room")).group.group_id
            for m in people[1:]:
                await m.client.group_join(group)
            senders = people[:5]
            acks = await asyncio.gather(
                *(s.client.send(f"g{s.id}-{i}", to_group=group) for i in range(6) for s in senders)
            )
            assert sorted(a.seq for a in acks) == list(range(1, 31))
            for m in people:
                await async_wait_until(
                    lambda m=m: len(m.seen(group)) == 30, what="30 group messages"
                )
            stored = await history(people[7], group)
            assert [m.seq for m in stored] == list(range(1, 31))
            assert {m.to_group for m in stored} == {group}
            for m in people:
                assert view(m.seen(group)) == view(stored)
                mine = {s.seq for s in stored if s.sender == m.id}
                assert m.pushed(group) == [s for s in range(1, 31) if s not in mine]

            # receipts: bob reads; both of alice's devices hear it
            assert (await bob.client.read(ab, 21)).read_seq == 21
            for m in (alice, alice2):
                await async_wait_until(
                    lambda m=m: any(
                        r.user_id == bob.id and r.read_seq == 21 and r.delivered_seq == 21
                        for r in m.receipts(ab)
                    ),
                    what="bob's read receipt",
                )
            with pytest.raises(Exception) as err:
                await bob.client.read(ab, 99)
            assert "INVALID_ARGUMENT" in str(err.value)

            # group read counts: members 5-9 read to 10, 10-12 to 30; all delivered (the
            # sessions report delivery themselves)
            for m in people[5:10]:
                await m.client.read(group, 10)
            for m in people[10:13]:
                await m.client.read(group, 30)
            authors = {s.seq: s.sender for s in stored}

            def expected_read(seq: int) -> int:
                readers = [m.id for m in people[5:10] if seq <= 10] + [m.id for m in people[10:13]]
                readers += [
                    s.id for s in senders if max(k for k, a in authors.items() if a == s.id) >= seq
                ]
                return len([r for r in readers if r != authors[seq]])

            async def counts_right() -> bool:
                got = await people[3].client.group_read_counts(group, 1, 30)
                return (
                    got.members == 20
                    and [c.seq for c in got.counts] == list(range(1, 31))
                    and all(
                        c.read == expected_read(c.seq) and c.delivered == 19 for c in got.counts
                    )
                )

            await async_wait_until(counts_right, what="group read counts")

            # an offline user: 1,000 messages, then unread counts and History on login
            await dave.client.logout()
            sent = []
            for chunk in range(OFFLINE // 50):
                sent += await asyncio.gather(
                    *(alice.client.send(f"d{chunk}-{i}", to_user=dave.id) for i in range(50))
                )
            assert sorted(a.seq for a in sent) == list(range(1, OFFLINE + 1))
            back = await login(cluster, "user02", 0, "dave-2")
            conv = {c.conv_id: c for c in (await back.client.sync()).conversations}[ad]
            assert (conv.last_seq, conv.read_seq, conv.unread) == (OFFLINE, 0, OFFLINE)
            assert conv.peer_id == alice.id

            async def alice_has_read_her_own() -> bool:
                mine = {c.conv_id: c for c in (await alice.client.sync()).conversations}
                return mine[ad].unread == 0 and mine[ad].read_seq == OFFLINE == mine[ad].last_seq

            await async_wait_until(alice_has_read_her_own, what="the sender's cursor")
            pages, before = [], 0
            while True:
                page = (
                    await back.client.history(ad, before_seq=before, limit=100)
                    if before
                    else await back.client.call(
                        "History", client_pb2.HistoryRequest(conv_id=ad, limit=100)
                    )
                )
                pages.append(page)
                before = page.messages[0].seq
                if not page.more:
                    break
            assert [p.more for p in pages] == [True] * (OFFLINE // 100 - 1) + [False]
            older_first = [m for p in reversed(pages) for m in p.messages]
            by_seq = {a.seq: a for a in sent}
            assert [m.seq for m in older_first] == list(range(1, OFFLINE + 1))
            assert all(
                m.msg_id == by_seq[m.seq].msg_id
                and m.sender == alice.id
                and m.sender_account == "user00"
                and m.to_user == dave.id
                for m in older_first
            )
            await async_wait_until(lambda: len(back.seen(ad)) == OFFLINE, what="dave's sync")
            assert view(back.seen(ad)) == view(older_first)

    asyncio.run(main())


class Senders:
    """Clients sending without pause (several sends in flight each), every send retried with
    its client_msg_id until acked, as the session does; acks recorded by key."""

    def __init__(self, members: list[Member], targets: list[dict[str, int]]) -> None:
        self.members = members
        self.targets = targets
        self.acked: dict[Key, client_pb2.SendAck] = {}

    async def run(
        self, per_stream: int = 0, streams: int = 2, until: asyncio.Event | None = None
    ) -> None:
        """`per_stream` sends per stream, or as many as fit before `until` is set."""
        await asyncio.gather(
            *(
                self._stream(m, t, s, per_stream, until)
                for m, t in zip(self.members, self.targets, strict=True)
                for s in range(streams)
            )
        )

    async def _stream(
        self, m: Member, target: dict[str, int], stream: int, n: int, until: asyncio.Event | None
    ) -> None:
        for i in itertools.count():
            if i == n > 0 or (until is not None and until.is_set()):
                return
            cmid = f"{m.id}-{stream}-{i}"
            ack = await m.client.send(f"{cmid} {'x' * (i % 50)}", client_msg_id=cmid, **target)
            assert self.acked.setdefault((ack.conv_id, m.id, cmid), ack) == ack


async def pairs_and_a_group(cluster: Cluster, n: int) -> tuple[list[Member], list[dict[str, int]]]:
    """n users on the cluster's gateways: even ones send to their friend, odd ones to a group
    of all of them."""
    members = [await register(cluster, f"s{i:02d}", i % len(cluster.gateways())) for i in range(n)]
    for a, b in zip(members[::2], members[1::2], strict=True):
        await befriend(a, b)
    group = (await members[0].client.group_create("busy")).group.group_id
    for m in members[1:]:
        await m.client.group_join(group)
    targets = [
        {"to_user": members[i + 1].id} if i % 2 == 0 else {"to_group": group} for i in range(n)
    ]
    return members, targets


def check_database(db_url: str, acked: dict[Key, client_pb2.SendAck]) -> None:
    """Every acked message is stored exactly once, as acked; nothing else is stored; every
    conversation holds seqs 1..n."""
    with Store.open(db_url, 8) as store:
        rows = stored_messages(store)
    by_key = {(r.conv_id, r.sender, r.client_msg_id): r for r in rows}
    assert len(by_key) == len(rows) == len(acked), (len(rows), len(acked))
    for key, ack in acked.items():
        row = by_key[key]
        assert (row.seq, row.msg_id, row.ts) == (ack.seq, ack.msg_id, ack.ts_ms), (row, ack)
    seqs: dict[int, list[int]] = {}
    for r in rows:
        seqs.setdefault(r.conv_id, []).append(r.seq)
    for conv, have in seqs.items():
        assert sorted(have) == list(range(1, len(have) + 1)), f"conversation {conv} has a gap"


def metric(cluster: Cluster, node_id: str, name: str) -> float:
    """One sample of a node's /metrics (0 when absent)."""
    assert cluster.view is not None
    peer = cluster.view.membership.get(node_id)
    assert peer is not None, f"{node_id} is not alive"
    url = f"http://127.0.0.1:{peer.info.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def kill_writer_mid_flush(database: str) -> None:
    """Stall every message table with a locking read, wait until the storage writer's INSERT
    blocks on it, KILL that connection, release the tables."""
    locker = pymysql.connect(**MYSQL, database=database)  # type: ignore[arg-type]
    admin = pymysql.connect(**MYSQL, database=database, autocommit=True)  # type: ignore[arg-type]
    try:
        with locker.cursor() as cur:
            cur.execute("BEGIN")
            for n in range(8):
                cur.execute(f"SELECT COUNT(*) FROM `message_{n}` FOR UPDATE")
        with admin.cursor() as cur:

            def blocked_writer() -> int:
                cur.execute(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s "
                    "AND ID <> CONNECTION_ID() AND INFO LIKE %s",
                    (database, "%INSERT INTO `message_%"),
                )
                found = cur.fetchall()
                return int(found[0][0]) if found else 0

            cur.execute("KILL CONNECTION %s", (wait_until(blocked_writer, what="a stalled flush"),))
    finally:
        locker.rollback()
        locker.close()
        admin.close()


@pytest.mark.timeout(120)
def test_killed_database_connection_mid_flush_loses_nothing_and_leaves_no_gap(
    tmp_path: Path, cluster_name: str, mysql_db: str
) -> None:
    database = parse_db_urls(mysql_db)[0].database

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, mysql_db) as cluster:
            await start_cluster(cluster, routers=1, gateways=1)
            storage = cluster.alive("storage")[0]
            members, targets = await pairs_and_a_group(cluster, 6)
            senders = Senders(members, targets)

            async def killer() -> None:
                for k in range(1, 4):
                    await async_wait_until(
                        lambda k=k: len(senders.acked) >= 80 * k, timeout=60, what=f"{80 * k} acks"
                    )
                    await asyncio.to_thread(kill_writer_mid_flush, database)

            await asyncio.gather(senders.run(per_stream=60), killer())
            assert metric(cluster, storage, "soim_storage_writer_failed_flushes_total") >= 3
            await asyncio.to_thread(check_database, mysql_db, senders.acked)

    asyncio.run(main())


async def restart_storage_under_load(cluster: Cluster, db_url: str, how: str) -> None:
    """Senders busy on every kind of conversation; the storage node is stopped (`how`: kill
    or stop) after 150 acks and a new one started; every send is acked in the end."""
    await start_cluster(cluster, routers=1, gateways=1)
    [storage] = [n for n in cluster.nodes if n.role == "storage"]
    members, targets = await pairs_and_a_group(cluster, 6)
    senders = Senders(members, targets)

    async def crash_and_restart() -> None:
        await async_wait_until(lambda: len(senders.acked) >= 150, timeout=60, what="150 acks")
        stopped_at = time.monotonic()
        getattr(storage, how)()
        assert await asyncio.to_thread(storage.wait) == (0 if how == "stop" else -9)
        assert time.monotonic() - stopped_at < 5.0, "the storage node took 5 s to stop"
        await cluster.wait_alive(cluster.start("storage"))

    await asyncio.gather(senders.run(per_stream=50), crash_and_restart())
    await asyncio.to_thread(check_database, db_url, senders.acked)
    # the clients agree with the store: every member's History is the stored order
    for conv in {a.conv_id for a in senders.acked.values()}:
        writers = {k[1] for k, a in senders.acked.items() if a.conv_id == conv}
        seen = [view(await history(m, conv)) for m in members if m.id in writers]
        assert all(s == seen[0] for s in seen)


@pytest.mark.timeout(150)
def test_storage_killed_9_with_sends_in_flight_loses_nothing_acked(
    tmp_path: Path, cluster_name: str, db_url: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, db_url) as cluster:
            await restart_storage_under_load(cluster, db_url, "kill")

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_storage_stopped_with_sends_in_flight_flushes_within_5s(
    tmp_path: Path, cluster_name: str
) -> None:
    db_url = f"sqlite:{tmp_path / 'data'}"

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, db_url) as cluster:
            await restart_storage_under_load(cluster, db_url, "stop")

    asyncio.run(main())


@pytest.mark.timeout(150)
def test_conversations_move_when_a_storage_node_joins_and_when_one_leaves(
    tmp_path: Path, cluster_name: str, mysql_db: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, mysql_db) as cluster:
            await start_cluster(cluster, routers=1, gateways=1)
            [first] = [n for n in cluster.nodes if n.role == "storage"]
            members, targets = await pairs_and_a_group(cluster, 16)
            senders = Senders(members, targets)
            done = asyncio.Event()

            async def more_acks(n: int) -> None:
                goal = len(senders.acked) + n
                await async_wait_until(
                    lambda: len(senders.acked) >= goal, timeout=60, what=f"{n} more acks"
                )

            async def join_then_leave() -> None:
                await more_acks(100)
                [second] = cluster.start("storage")
                await cluster.wait_alive([second])
                ring = Ring([first.node_id, second.node_id])
                await more_acks(150)
                if any(ring.owner(a.conv_id) == second.node_id for a in senders.acked.values()):
                    stored = "soim_storage_messages_stored_total"
                    await async_wait_until(
                        lambda: metric(cluster, second.node_id, stored) > 0,
                        what="the new owner storing",
                    )
                first.stop()
                assert await asyncio.to_thread(first.wait) == 0
                await more_acks(150)
                done.set()

            await asyncio.gather(senders.run(until=done), join_then_leave())
            await asyncio.to_thread(check_database, mysql_db, senders.acked)

    asyncio.run(main())
