"""Edits, recalls, replies, mentions and typing, end to end on a real cluster.

Alice edits and recalls her messages to Bob while Bob is offline; the storage node is killed
-9 and replaced; Bob's new device logs in and gets every message and event in seq order, and
its view (and History's) is the final state: the newest edit's text, marked edited, and the
recalled message erased. Only the author may change a message, only within the edit window;
the refusals carry their codes. Typing reaches the friend and the other group members, is
rate-limited and never stored. A reply quotes its seq and @names become mention ids.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fabric.methods import RpcError
from schema import client_pb2
from schema import common_pb2 as pb
from tests.cluster.test_storage import Member, history, login, register
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until
from tui import command_results as results
from tui import commands, message_view
from tui.commands import Target
from tui.render_text import message_line

EDIT = client_pb2.MESSAGE_KIND_EDIT
RECALL = client_pb2.MESSAGE_KIND_RECALL


async def run(m: Member, line: str, to: Target, client_msg_id: str = "") -> results.Result:
    """A command line as `soim` runs it, with `to` open."""
    return await commands.execute(commands.parse(line), m.client, to, client_msg_id)


async def refused(coro: object) -> int:
    try:
        await coro  # type: ignore[misc]
    except RpcError as err:
        return err.code
    raise AssertionError("not refused")


def final(msgs: list[client_pb2.ChatMessage]) -> dict[int, str]:
    """seq -> the text a reader shows, after folding every edit and recall."""
    amends: dict[int, client_pb2.ChatMessage] = {}
    for msg in msgs:
        if message_view.is_event(msg):
            message_view.fold(amends, msg)
    return {m.seq: message_view.shown(m, amends) for m in msgs if not message_view.is_event(m)}


def typings(m: Member) -> list[client_pb2.Typing]:
    return [p.typing for p in m.pushes if p.WhichOneof("item") == "typing"]


@pytest.mark.timeout(120)
def test_edits_recalls_survive_kill_9_and_reach_an_offline_device_in_order(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:  # SQLite: the MariaDB columns are tested in shard_store
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            nodes = (
                cluster.start("directory")
                + cluster.start("router")
                + cluster.start("storage")
                + cluster.start("gateway", 2)
            )
            await cluster.wait_alive(nodes)
            await scenario(cluster)

    asyncio.run(main())


async def scenario(cluster: Cluster) -> None:
    alice, bob = await register(cluster, "alice", 0), await register(cluster, "bob", 1)
    await alice.client.add_friend(bob.id)
    conv = (await bob.client.add_friend(alice.id)).conv_id
    to_bob = Target(bob.id)
    await bob.client.close()  # Bob is offline from here on

    for text in ("hello bob", "typo heer", "secret"):
        await alice.client.send(text, to_user=bob.id)
    # edit SEQ TEXT, edit TEXT (my newest: seq 3), recall SEQ, edit again: seqs 4-7
    assert isinstance(await run(alice, "edit 2 typo here", to_bob), results.Sent)
    edited = await run(alice, "edit secret, edited", to_bob)
    assert isinstance(edited, results.Sent) and edited.ref_seq == 3 and edited.kind == EDIT
    recalled = await run(alice, "recall #3", to_bob, "recall-3")
    again = await run(alice, "recall #3", to_bob, "recall-3")  # a retry: acked, stored once
    assert isinstance(recalled, results.Sent) and isinstance(again, results.Sent)
    assert again.ack.duplicate and again.ack.seq == recalled.ack.seq == 6
    last = await run(alice, 'edit 2 "typo here!"', to_bob)
    assert isinstance(last, results.Sent) and last.ack.seq == 7

    # refusals: a recalled message, a seq that does not exist, a recall with text
    assert (
        await refused(alice.client.send("x", to_user=bob.id, kind=EDIT, ref_seq=3)) == pb.NOT_FOUND
    )
    assert (
        await refused(alice.client.send("x", to_user=bob.id, kind=EDIT, ref_seq=99)) == pb.NOT_FOUND
    )
    assert (
        await refused(alice.client.send("x", to_user=bob.id, kind=RECALL, ref_seq=1))
        == pb.INVALID_ARGUMENT
    )
    assert (
        await refused(alice.client.send("x", to_user=bob.id, kind=EDIT, ref_seq=4))
        == pb.INVALID_ARGUMENT
    )  # an edit event is not a message

    async def erased() -> bool:  # the recalled body is gone from the store
        return [m.body for m in await history(alice, conv) if m.seq == 3] == [""]

    await async_wait_until(erased, timeout=10, what="the recalled body erased")

    # kill -9 the storage node; a new one with a 1 s edit window takes over
    [storage] = [n for n in cluster.nodes if n.role == "storage"]
    storage.kill()
    assert await asyncio.to_thread(storage.wait) == -9
    await cluster.wait_alive(cluster.start("storage", SOIM_EDIT_WINDOW_S="1"))

    # Bob's new device: every message and event, in seq order, and the final state
    phone = await login(cluster, "bob", 0, "bob-phone")
    await phone.client.catch_up()
    seen = phone.seen(conv)
    assert [(m.seq, m.kind, m.ref_seq) for m in seen] == [
        (1, 0, 0),
        (2, 0, 0),
        (3, 0, 0),
        (4, EDIT, 2),
        (5, EDIT, 3),
        (6, RECALL, 3),
        (7, EDIT, 2),
    ]
    want = {1: "hello bob", 2: "typo here! (edited)", 3: "message recalled"}
    assert [message_line(m) for m in seen] == [  # as soim --plain prints them
        "alice: hello bob",
        "alice: typo heer",
        "alice: message recalled",
        "alice edited #2: typo here",
        "alice edited #3: secret, edited",
        "alice recalled #3",
        "alice edited #2: typo here!",
    ]
    assert final(seen) == want
    assert final(await history(phone, conv)) == want
    [state] = [c for c in (await phone.client.sync()).conversations if c.conv_id == conv]
    assert state.last_seq == 7

    # only the author; only within the window (seq 1 is older than 1 s by now)
    assert (
        await refused(phone.client.send("mine", to_user=alice.id, kind=EDIT, ref_seq=1))
        == pb.NOT_AUTHOR
    )
    failed = await run(phone, "edit 1 mine", Target(alice.id))
    assert failed == results.Failure(
        "Not author: message #1 is not yours: only its author may change it"
    )
    failed = await run(phone, "recall 42", Target(alice.id))
    assert failed == results.Failure("No message #42 here (or it was recalled)")
    sent_ms = seen[0].ts_ms
    await async_wait_until(
        lambda: time.time() * 1000 - sent_ms > 1500, timeout=5, what="seq 1 older than the window"
    )
    assert (
        await refused(alice.client.send("late", to_user=bob.id, kind=EDIT, ref_seq=1))
        == pb.EDIT_WINDOW_CLOSED
    )
    await typing_replies_and_mentions(cluster, alice, phone, conv)


async def typing_replies_and_mentions(
    cluster: Cluster, alice: Member, bob: Member, conv: int
) -> None:
    carol = await register(cluster, "carol", 1)
    gid = (await alice.client.group_create("devs")).group.group_id
    for m in (bob, carol):
        await m.client.group_join(gid)

    # typing: 1:1 to Bob, then to the group's other members; rate-limited; never stored
    await alice.client.typing(conv)
    await async_wait_until(lambda: typings(bob), timeout=10, what="Bob sees alice typing")
    assert await refused(alice.client.typing(gid)) == pb.RATE_LIMITED

    async def group_typing() -> bool:
        try:
            await alice.client.typing(gid)
        except RpcError as err:
            assert err.code == pb.RATE_LIMITED
            return False
        return True

    await async_wait_until(group_typing, timeout=5, interval=0.2, what="the next typing notice")
    for m in (bob, carol):
        await async_wait_until(
            lambda m=m: any(t.conv_id == gid for t in typings(m)),
            timeout=10,
            what="typing in the group",
        )
    assert not any(t.conv_id == gid for t in typings(alice))
    assert [t.account for t in typings(bob)] == ["alice", "alice"]
    assert await refused(carol.client.typing(conv)) in (pb.FORBIDDEN, pb.NOT_FRIEND, pb.NOT_FOUND)
    last = {c.conv_id: c.last_seq for c in (await alice.client.sync()).conversations}
    assert last[conv] == 7 and last.get(gid, 0) == 0

    # a reply quoting seq 1, naming @alice and @carol (and @nobody, not a member)
    await carol.client.send("first!", to_group=gid)
    group = Target(gid, group=True)
    reply = await run(bob, "reply 1 @alice @carol @nobody look at this", group)
    assert isinstance(reply, results.Sent) and reply.ref_seq == 1

    await async_wait_until(
        lambda: [m for m in alice.seen(gid) if m.seq == 2], timeout=10, what="the reply at alice"
    )
    [got] = [m for m in alice.seen(gid) if m.seq == 2]
    assert (got.ref_seq, list(got.mentions)) == (1, [alice.id, carol.id])
    assert message_view.mentions_me(got, alice.id) and not message_view.mentions_me(got, bob.id)
    [stored] = [m for m in await history(carol, gid) if m.seq == 2]
    assert (stored.ref_seq, list(stored.mentions)) == (1, [alice.id, carol.id])
    assert message_view.quote(1, {1: (await history(carol, gid))[0]}, {}) == "↳ #1 carol: first!"
    # a reply to a seq that does not exist; mentions in a 1:1 message
    assert await refused(bob.client.send("?", to_group=gid, ref_seq=9)) == pb.NOT_FOUND
    assert (
        await refused(bob.client.send("?", to_user=alice.id, mentions=[alice.id]))
        == pb.INVALID_ARGUMENT
    )
