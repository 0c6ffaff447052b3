"""Ids out of range and repeated friend requests, on a real cluster (SQLite and MariaDB).

Every uint64 of the planes may reach 2**64-1, the columns only 2**63-1: every client method and
every directory and storage rpc that takes an id, a seq or a cursor answers INVALID_ARGUMENT for
2**63 and 2**64-1, and no node logs a traceback (before, SQLite's driver overflowed and MariaDB
refused the value: INTERNAL with a traceback in the directory and storage logs). A friend
request asked three times pushes the other user one notice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from fabric.methods import Method, RpcError
from schema import client_pb2 as c
from schema import cluster_pb2 as d
from schema import common_pb2 as pb
from schema.contracts.directory import DIRECTORY
from schema.contracts.storage import STORAGE
from tests.harness import Cluster, running_cluster
from tui.session import ClientSession

PASSWORD = "correct horse"
HUGE = (2**63, 2**64 - 1)


@pytest.fixture(params=["sqlite", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SOIM_DB: embedded SQLite, or a fresh MariaDB database."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'data'}"
    return str(request.getfixturevalue("mysql_db"))


def client_requests(x: int, friend: int, group: int) -> list[tuple[str, Message]]:
    """Every client request that carries an id, seq or cursor, with `x` in one of them (the
    others valid: the friend's id, the group, seq 1)."""
    return [
        ("Send", c.SendRequest(client_msg_id="m", to_user=x, body="hi")),
        ("Send", c.SendRequest(client_msg_id="m", to_group=x, body="hi")),
        ("Sync", c.SyncRequest(conv_ids=[group, x])),
        ("History", c.HistoryRequest(conv_id=x)),
        ("History", c.HistoryRequest(conv_id=group, after_seq=x)),
        ("History", c.HistoryRequest(conv_id=group, before_seq=x)),
        ("Delivered", c.DeliveredRequest(conv_id=x, seq=1)),
        ("Delivered", c.DeliveredRequest(conv_id=group, seq=x)),
        ("Read", c.ReadRequest(conv_id=x, seq=1)),
        ("Read", c.ReadRequest(conv_id=group, seq=x)),
        ("GroupReadCounts", c.GroupReadCountsRequest(conv_id=x, from_seq=1, to_seq=1)),
        ("GroupReadCounts", c.GroupReadCountsRequest(conv_id=group, from_seq=x, to_seq=x)),
        ("OnlineUsers", c.OnlineUsersRequest(cursor=x)),
        ("AddFriend", c.AddFriendRequest(user_id=x)),
        ("GroupJoin", c.GroupJoinRequest(group_id=x)),
        ("GroupLeave", c.GroupLeaveRequest(group_id=x)),
        ("GroupUsers", c.GroupUsersRequest(group_id=x)),
        ("GroupSettings", c.GroupSettingsRequest(group_id=x)),
        ("GroupInvite", c.GroupInviteRequest(group_id=x, user_id=friend)),
        ("GroupInvite", c.GroupInviteRequest(group_id=group, user_id=x)),
    ]


def cluster_requests(x: int, me: int, friend: int, group: int) -> list[tuple[Method, Message]]:
    """Directory and storage requests with `x` as one id (as a buggy or hostile gateway might
    send them)."""
    r = d.DirGroupRequest
    return [
        (DIRECTORY["Users"], d.UserIds(user_ids=[me, x])),
        (DIRECTORY["Friends"], d.UserRef(user_id=x)),
        (DIRECTORY["AddFriend"], d.DirAddFriendRequest(user_id=me, friend_id=x)),
        (
            DIRECTORY["CheckAccess"],
            d.AccessRequest(
                checks=[
                    d.AccessCheck(user_id=me, to_user=friend),
                    d.AccessCheck(user_id=me, conv_id=x),
                ]
            ),
        ),
        (DIRECTORY["Conversations"], d.UserRef(user_id=x)),
        (DIRECTORY["Groups"], d.UserRef(user_id=x)),
        (DIRECTORY["GroupCreate"], d.DirGroupCreateRequest(user_id=x, name="x")),
        (DIRECTORY["GroupSearch"], d.DirGroupSearchRequest(prefix="x", user_id=x)),
        (DIRECTORY["GroupJoin"], r(user_id=me, group_id=x)),
        (DIRECTORY["GroupJoin"], r(user_id=x, group_id=group)),
        (DIRECTORY["GroupLeave"], r(user_id=me, group_id=x)),
        (DIRECTORY["GroupUsers"], r(user_id=me, group_id=x)),
        (DIRECTORY["GroupMembers"], d.GroupIds(group_ids=[x])),
        (DIRECTORY["Touch"], d.TouchRequest(seen=[d.UserSeen(user_id=x, ts_ms=1)])),
        (DIRECTORY["ListGroups"], d.ListGroupsRequest(cursor=x)),
        (DIRECTORY["SetDisabled"], d.DirDisableRequest(user_id=x)),
        (STORAGE["History"], c.HistoryRequest(conv_id=group, after_seq=x)),
        (STORAGE["History"], c.HistoryRequest(conv_id=x)),
        (
            STORAGE["Sync"],
            d.StoreSyncRequest(
                user_id=me,
                conversations=[c.Conversation(conv_id=x, kind=c.CONV_KIND_GROUP, peer_id=x)],
            ),
        ),
        (STORAGE["GroupReadCounts"], c.GroupReadCountsRequest(conv_id=x, from_seq=1, to_seq=1)),
        (
            STORAGE["Cursors"],
            d.CursorBatchRequest(
                gateway_id="g",
                updates=[
                    d.CursorUpdate(
                        origin=d.ClientRequestRef(session_id=b"s"),
                        user_id=me,
                        conv_id=group,
                        read_seq=x,
                    )
                ],
            ),
        ),
        (
            STORAGE["StoreBatch"],
            d.StoreBatchRequest(
                gateway_id="g",
                items=[
                    d.StoreItem(
                        origin=d.ClientRequestRef(session_id=b"s"),
                        sender=me,
                        sender_account="a",
                        client_msg_id="m",
                        conv_id=x,
                        to_group=x,
                        body="hi",
                    )
                ],
            ),
        ),
    ]


async def start(cluster: Cluster) -> None:
    await cluster.start_all()


async def user(cluster: Cluster, account: str) -> ClientSession:
    client = await cluster.client()
    await client.register(account, PASSWORD)
    return client


async def code_of(call: Awaitable[Any]) -> int:
    try:
        await call
    except RpcError as err:
        return err.code
    return pb.OK


@pytest.mark.timeout(60)
def test_ids_beyond_a_signed_column_are_invalid_arguments(
    tmp_path: Path, cluster_name: str, db_url: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, db_url) as cluster:
            await start(cluster)
            alice, bob = await user(cluster, "alice"), await user(cluster, "bob")
            assert alice.user and bob.user
            me, friend = alice.user.user_id, bob.user.user_id
            await alice.add_friend(friend)
            await bob.add_friend(me)
            group = (await alice.group_create("room")).group.group_id
            await alice.send("hello", to_group=group)

            view = cluster.view
            assert view is not None
            wrong: list[str] = []
            for x in HUGE:
                for name, req in client_requests(x, friend, group):
                    code = await code_of(alice.call(name, req))
                    if code != pb.INVALID_ARGUMENT:
                        wrong.append(f"client.{name} {req} -> {pb.ErrorCode.Name(code)}")
                for method, req in cluster_requests(x, me, friend, group):
                    role = method.name.split(".")[0]
                    [node] = cluster.alive(role)
                    peer = view.peers.get(node)
                    code = await code_of(peer.call(method, req, timeout=5))
                    if code != pb.INVALID_ARGUMENT:
                        wrong.append(f"{method.name} {req} -> {pb.ErrorCode.Name(code)}")
            assert not wrong, "\n".join(wrong)

            # the same calls with ids in range still work
            assert (await alice.history(group)).messages[0].body == "hello"
            logs = {n.role: n.log() for n in cluster.nodes}
            assert not [role for role, text in logs.items() if "Traceback" in text], logs

    asyncio.run(main())


async def next_notice(client: ClientSession, timeout: float = 5.0) -> c.Notice:
    async with asyncio.timeout(timeout):
        while True:
            event = await client.events.get()
            if event.push is not None and event.push.WhichOneof("item") == "notice":
                return event.push.notice


@pytest.mark.timeout(60)
def test_a_repeated_friend_request_notifies_once(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(
            tmp_path, cluster_name, f"sqlite:{tmp_path / 'data'}"
        ) as cluster:
            await start(cluster)
            alice, bob = await user(cluster, "alice"), await user(cluster, "bob")
            assert alice.user and bob.user
            replies = [await alice.add_friend(bob.user.user_id) for _ in range(3)]
            assert [r.result for r in replies] == [c.ADD_FRIEND_REQUESTED] * 3
            assert [r.notified for r in replies] == [True, False, False]
            # a later push on the same path marks the end of what the requests pushed
            group = (await alice.group_create("marker")).group.group_id
            await alice.call(
                "GroupInvite", c.GroupInviteRequest(group_id=group, user_id=bob.user.user_id)
            )
            kinds: list[int] = []
            while not kinds or kinds[-1] != c.NOTICE_GROUP_INVITE:
                kinds.append((await next_notice(bob)).kind)
            assert kinds == [c.NOTICE_FRIEND_REQUEST, c.NOTICE_GROUP_INVITE]
            # accepting still notifies
            assert (await bob.add_friend(alice.user.user_id)).result == c.ADD_FRIEND_ACCEPTED
            assert (await next_notice(alice)).kind == c.NOTICE_FRIEND_ACCEPTED

    asyncio.run(main())
