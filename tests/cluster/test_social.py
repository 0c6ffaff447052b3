"""A user's own relations and account on a real cluster (SQLite, two gateways): remove a friend,
decline a request, block and unblock (sends, typing and friend requests BLOCKED, presence
hidden), the online list limited to friends and shared groups, group kick and owner hand-over,
a password change that ends the other sessions only, and deleting one's own account."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fabric.methods import RpcError
from schema import client_pb2
from schema import common_pb2 as pb
from tests.harness import Cluster, running_cluster
from tui.session import ClientSession, EventKind

PASSWORD = "correct horse"
NEW_PASSWORD = "battery staple"


async def notice(client: ClientSession, kind: int) -> client_pb2.Notice:
    """The client's next Notice of `kind` (other events are skipped)."""
    async with asyncio.timeout(10):
        while True:
            event = await client.events.get()
            if (
                event.kind is EventKind.PUSH
                and event.push is not None
                and event.push.notice.kind == kind
            ):
                return event.push.notice


async def refused(call: Callable[[], Awaitable[Any]]) -> int:
    """The error code `call` fails with; retried while it still succeeds (a gateway drops its
    cached permission when the directory's invalidation arrives, a moment after the reply)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            await call()
        except RpcError as err:
            return err.code
        assert time.monotonic() < deadline, "the call kept succeeding"


async def online(client: ClientSession, everyone: bool = False) -> list[str]:
    reply = await client.call("OnlineUsers", client_pb2.OnlineUsersRequest(everyone=everyone))
    return [u.account for u in reply.users]


async def rpc_error(call: Awaitable[Any]) -> int:
    with pytest.raises(RpcError) as err:
        await call
    return err.value.code


@pytest.mark.timeout(90)
def test_relations_and_account(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await cluster.start_all(gateways=2)
            await relations(cluster)

    asyncio.run(main())


async def relations(cluster: Cluster) -> None:
    alice, bob, carol, dave = [await cluster.client(i % 2) for i in range(4)]
    a = (await alice.register("alice", PASSWORD)).user_id
    b = (await bob.register("bob", PASSWORD)).user_id
    c = (await carol.register("carol", PASSWORD)).user_id
    d = (await dave.register("dave", PASSWORD)).user_id
    await alice.add_friend(b)
    conv = (await bob.add_friend(a)).conv_id
    await bob.send("hi alice", to_user=a)

    # the online list: friends and members of shared groups (and me); everyone on request
    assert await online(bob) == ["alice", "bob"]
    assert await online(carol) == ["carol"]
    assert await online(carol, everyone=True) == ["alice", "bob", "carol", "dave"]
    group = (await alice.group_create("den")).group.group_id
    await carol.group_join(group)
    await dave.group_join(group)
    assert await online(alice) == ["alice", "bob", "carol", "dave"]
    assert await online(carol) == ["alice", "carol", "dave"]

    # block: bob's sends and friend requests are refused, alice looks offline to him
    await alice.call("Block", client_pb2.BlockRequest(user_id=b))
    await alice.call("Block", client_pb2.BlockRequest(user_id=b))  # twice is fine
    assert await refused(lambda: bob.send("still there?", to_user=a)) == pb.BLOCKED
    assert await rpc_error(bob.add_friend(a)) == pb.BLOCKED
    assert [(f.account, f.online) for f in (await bob.friends()).friends] == [("alice", False)]
    assert "alice" not in await online(bob, everyone=True)
    mine = await alice.friends()
    assert [(f.account, f.online) for f in mine.friends] == [("bob", True)]
    assert [u.account for u in mine.blocked] == ["bob"]
    direct = (await alice.send("I can still write to you", to_user=b)).conv_id
    assert await rpc_error(bob.typing(direct)) == pb.BLOCKED  # nor is he seen typing
    await alice.call("Block", client_pb2.BlockRequest(user_id=d))  # not a friend
    assert await rpc_error(dave.add_friend(a)) == pb.BLOCKED
    members = (await dave.group_users(group)).members
    assert [(m.account, m.online) for m in members if m.account == "alice"] == [("alice", False)]
    assert (
        await rpc_error(alice.call("Block", client_pb2.BlockRequest(user_id=a)))
        == pb.INVALID_ARGUMENT
    )
    assert (
        await rpc_error(alice.call("Block", client_pb2.BlockRequest(user_id=99999))) == pb.NOT_FOUND
    )
    for other in (b, d):
        await alice.call("Unblock", client_pb2.BlockRequest(user_id=other))
    await bob.send("unblocked", to_user=a)
    assert [(f.account, f.online) for f in (await bob.friends()).friends] == [("alice", True)]
    assert not (await alice.friends()).blocked

    # decline a request; a second decline, or declining my own request, is NOT_FOUND
    await carol.add_friend(d)
    assert (
        await rpc_error(
            carol.call("RemoveFriend", client_pb2.RemoveFriendRequest(user_id=d, decline=True))
        )
        == pb.NOT_FOUND
    )
    reply = await dave.call("RemoveFriend", client_pb2.RemoveFriendRequest(user_id=c, decline=True))
    assert reply.conv_id == 0
    told = await notice(carol, client_pb2.NOTICE_FRIEND_REMOVED)
    assert (told.user.user_id, told.conv_id) == (d, 0)
    assert not (await carol.friends()).friends
    assert (
        await rpc_error(
            dave.call("RemoveFriend", client_pb2.RemoveFriendRequest(user_id=c, decline=True))
        )
        == pb.NOT_FOUND
    )
    assert (await carol.add_friend(d)).notified  # asking again is a new request

    # unfriend: the conversation leaves both lists, sends are NOT_FRIEND
    reply = await bob.call("RemoveFriend", client_pb2.RemoveFriendRequest(user_id=a))
    assert reply.conv_id == conv
    told = await notice(alice, client_pb2.NOTICE_FRIEND_REMOVED)
    assert (told.user.user_id, told.conv_id) == (b, conv)
    assert await refused(lambda: alice.send("gone?", to_user=b)) == pb.NOT_FRIEND
    assert not (await alice.friends()).friends
    assert conv not in [s.conv_id for s in (await alice.sync()).conversations]
    assert (
        await rpc_error(bob.call("RemoveFriend", client_pb2.RemoveFriendRequest(user_id=a)))
        == pb.NOT_FOUND
    )

    # group: only the owner kicks and hands over, only members
    kick = client_pb2.GroupKickRequest(group_id=group, user_id=c)
    assert await rpc_error(dave.call("GroupKick", kick)) == pb.FORBIDDEN
    await alice.call("GroupKick", kick)
    assert (await notice(carol, client_pb2.NOTICE_GROUP_REMOVED)).conv_id == group
    assert not (await carol.groups()).groups
    assert await refused(lambda: carol.send("let me in", to_group=group)) == pb.NOT_MEMBER
    assert await rpc_error(alice.call("GroupKick", kick)) == pb.NOT_MEMBER
    assert (
        await rpc_error(
            alice.call("GroupKick", client_pb2.GroupKickRequest(group_id=group, user_id=a))
        )
        == pb.INVALID_ARGUMENT
    )
    assert (
        await rpc_error(
            alice.call("GroupOwner", client_pb2.GroupOwnerRequest(group_id=group, user_id=b))
        )
        == pb.NOT_MEMBER
    )
    handed = await alice.call("GroupOwner", client_pb2.GroupOwnerRequest(group_id=group, user_id=d))
    assert (handed.group.owner, handed.group.owner_account) == (d, "dave")
    assert (await notice(dave, client_pb2.NOTICE_GROUP_OWNER)).conv_id == group
    assert (
        await rpc_error(
            alice.call("GroupOwner", client_pb2.GroupOwnerRequest(group_id=group, user_id=a))
        )
        == pb.FORBIDDEN
    )
    await alice.group_leave(group)

    # passwd: the old password is checked, the other sessions end, this one goes on
    other = await cluster.client(1)
    await other.login("alice", PASSWORD)
    assert (
        await rpc_error(alice.change_password("wrong password", NEW_PASSWORD)) == pb.BAD_CREDENTIALS
    )
    assert await rpc_error(alice.change_password(PASSWORD, "short")) == pb.INVALID_PASSWORD
    changed = await alice.change_password(PASSWORD, NEW_PASSWORD)
    ended = (await notice(other, client_pb2.NOTICE_SESSION_ENDED)).text
    assert "password" in ended or "revoked" in ended
    assert (await alice.me()).account == "alice"
    assert alice.token == changed.token
    assert await rpc_error((await cluster.client()).login("alice", PASSWORD)) == pb.BAD_CREDENTIALS
    await (await cluster.client()).login("alice", NEW_PASSWORD)

    # delete-account: confirmed by the password, as soimctl user delete
    assert await rpc_error(dave.delete_account("wrong password")) == pb.BAD_CREDENTIALS
    await dave.delete_account(PASSWORD)
    ended = (await notice(dave, client_pb2.NOTICE_SESSION_ENDED)).text
    assert "deleted" in ended or "revoked" in ended  # the token audit may see it first
    assert await rpc_error((await cluster.client()).login("dave", PASSWORD)) == pb.BAD_CREDENTIALS
    [den] = (await bob.group_search("den")).groups
    assert (den.members, den.owner) == (0, 0)  # dave was its last member
    assert not (await carol.friends()).friends
