"""The client command set through real gateways, routers and a directory (separate processes),
on SQLite and on MariaDB: every command, its error codes, and guarantee 4 (nothing before login,
no acting as another user, member lists only for members); the session rate limit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric import timing
from fabric.methods import RpcError
from schema import client_pb2
from schema import common_pb2 as pb
from tests.harness import Cluster, SharedCluster, running_cluster
from tests.support import expect_error
from tui.session import ClientSession

PASSWORD = "correct horse"


async def start_cluster(cluster: Cluster) -> None:
    nodes = cluster.start("directory") + cluster.start("router", 2) + cluster.start("gateway", 2)
    await cluster.wait_alive(nodes)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedCluster]:
    """One SQLite cluster for the tests below the command set: they stop no node, and their
    users differ."""
    tmp = tmp_path_factory.mktemp("gateway")
    cluster = SharedCluster(tmp, f"t{uuid.uuid4().hex[:12]}", f"sqlite:{tmp}/db", start_cluster)
    yield cluster
    cluster.close()


async def user(cluster: Cluster, account: str, gateway: int = 0) -> ClientSession:
    client = await cluster.client(gateway)
    await client.register(account, PASSWORD, nickname=account.title())
    return client


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("db_url", "redis_env"), [("sqlite", "no-redis"), ("mysql", "redis")], indirect=True
)
def test_the_command_set(
    tmp_path: Path, cluster_name: str, db_url: str, redis_env: dict[str, str]
) -> None:
    """Each database's SQL once and each Redis mode once: the directory's Redis layer (its L2
    cache and login throttle, nodes/directory/caches.py and throttle.py) works alike over either
    database, so SQLite with Redis and MariaDB without ran the same code again."""

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, db_url, redis_env) as cluster:
            await start_cluster(cluster)
            alice = await user(cluster, "alice", 0)
            bob = await user(cluster, "bob", 1)
            carol = await user(cluster, "carol", 0)
            assert alice.user and bob.user and carol.user
            a, b, c = alice.user.user_id, bob.user.user_id, carol.user.user_id
            assert len({a, b, c}) == 3

            # me / login again / wrong password / duplicate account
            me = await bob.me()
            assert (me.user_id, me.account, me.nickname) == (b, "bob", "Bob")
            again = await cluster.client(1)
            assert (await again.login("alice", PASSWORD)).user_id == a
            fresh = cluster.client
            await expect_error(pb.BAD_CREDENTIALS, (await fresh()).login("alice", "nope1234"))
            await expect_error(pb.BAD_CREDENTIALS, (await fresh()).login("nobody", PASSWORD))
            await expect_error(pb.ALREADY_EXISTS, (await fresh()).register("alice", PASSWORD))
            await expect_error(pb.INVALID_ACCOUNT, (await fresh()).register("A!", PASSWORD))
            await expect_error(pb.INVALID_PASSWORD, (await fresh()).register("dave", "short"))

            # search -u
            found = await alice.search_users("b")
            assert [(u.user_id, u.account) for u in found.users] == [(b, "bob")]
            await expect_error(pb.INVALID_ARGUMENT, alice.search_users(""))

            # add -u, then adding back accepts; both sides notified
            requested = await alice.add_friend(b)
            assert requested.result == client_pb2.ADD_FRIEND_REQUESTED
            notice = await next_push(bob, "notice")
            assert notice.notice.kind == client_pb2.NOTICE_FRIEND_REQUEST
            assert notice.notice.user.user_id == a
            accepted = await bob.add_friend(a)
            assert accepted.result == client_pb2.ADD_FRIEND_ACCEPTED and accepted.conv_id
            assert (
                await next_push(alice, "notice")
            ).notice.kind == client_pb2.NOTICE_FRIEND_ACCEPTED
            await expect_error(pb.ALREADY_FRIENDS, alice.add_friend(b))
            await expect_error(pb.SELF_FRIEND, alice.add_friend(a))
            await expect_error(pb.NOT_FOUND, alice.add_friend(987654321))

            # friends with online state
            friends = {f.user_id: f for f in (await alice.friends()).friends}
            assert friends[b].account == "bob" and friends[b].online
            assert friends[b].state == client_pb2.FRIEND_STATE_ACCEPTED
            assert friends[b].conv_id == accepted.conv_id

            # users (online, from every router, paginated)
            online = await collect_online(alice, page=2)
            assert {a, b, c} <= online

            # groups
            created = (await alice.group_create("rustaceans")).group
            assert created.group_id and created.name == "rustaceans" and created.owner == a
            await expect_error(pb.ALREADY_EXISTS, carol.group_create("rustaceans"))
            await expect_error(pb.INVALID_NAME, carol.group_create(""))
            await expect_error(pb.INVALID_NAME, carol.group_create("x" * 33))
            search = await bob.group_search("rust")
            assert [g.group_id for g in search.groups] == [created.group_id]
            await expect_error(pb.NOT_MEMBER, bob.group_users(created.group_id))
            joined = (await bob.group_join(created.group_id)).group
            assert joined.members == 2
            await expect_error(pb.ALREADY_MEMBER, bob.group_join(created.group_id))
            await expect_error(pb.NOT_FOUND, bob.group_join(123456789))
            members = {m.user_id: m for m in (await bob.group_users(created.group_id)).members}
            assert set(members) == {a, b} and members[a].online
            mine = await bob.groups()
            assert [g.group_id for g in mine.groups] == [created.group_id]

            small = (await carol.group_create("tiny", user_limit=2)).group
            await alice.group_join(small.group_id)
            await expect_error(pb.GROUP_FULL, bob.group_join(small.group_id))
            await expect_error(pb.INVALID_ARGUMENT, carol.group_create("huge", user_limit=100_000))

            await bob.group_leave(created.group_id)
            assert (await bob.groups()).groups == []

    asyncio.run(main())


async def next_push(client: ClientSession, item: str, timeout: float = 5.0) -> client_pb2.Push:
    """The next push of kind `item` (message, notice, receipt, ...) the client receives."""
    async with asyncio.timeout(timeout):
        while True:
            event = await client.events.get()
            if event.push is not None and event.push.WhichOneof("item") == item:
                return event.push


async def collect_online(client: ClientSession, page: int) -> set[int]:
    seen: list[int] = []
    cursor = 0
    while True:
        reply = await client.online_users(cursor=cursor, limit=page, everyone=True)
        seen += [u.user_id for u in reply.users]
        if not reply.next_cursor:
            break
        cursor = reply.next_cursor
    assert len(seen) == len(set(seen)), "a user appeared on two pages"
    return set(seen)


@pytest.mark.timeout(90)
def test_nothing_before_login_and_no_acting_as_another(shared: SharedCluster) -> None:
    async def main(cluster: Cluster) -> None:
        stranger = await cluster.client()
        assert (await stranger.ping()).server_time_ms > 0
        for name, request in [
            ("Me", client_pb2.MeRequest()),
            ("Friends", client_pb2.FriendsRequest()),
            ("AddFriend", client_pb2.AddFriendRequest(user_id=1)),
            ("OnlineUsers", client_pb2.OnlineUsersRequest()),
            ("SearchUsers", client_pb2.SearchUsersRequest(prefix="a")),
            ("Groups", client_pb2.GroupsRequest()),
            ("GroupCreate", client_pb2.GroupCreateRequest(name="g")),
            ("GroupJoin", client_pb2.GroupJoinRequest(group_id=1)),
            ("GroupUsers", client_pb2.GroupUsersRequest(group_id=1)),
            ("Logout", client_pb2.LogoutRequest()),
        ]:
            await expect_error(pb.UNAUTHENTICATED, stranger.call(name, request))
        await expect_error(pb.TOKEN_INVALID, stranger.resume("forged.token.value"))

        alice = await user(cluster, "alice")
        mallory = await user(cluster, "mallory", 1)
        assert alice.user and mallory.user
        # Mallory's requests carry no sender: whatever she sends, she acts as herself.
        await mallory.add_friend(alice.user.user_id)
        friends = (await alice.friends()).friends
        assert [(f.user_id, f.state) for f in friends] == [
            (mallory.user.user_id, client_pb2.FRIEND_STATE_INCOMING)
        ]
        group = (await alice.group_create("private")).group
        await expect_error(pb.NOT_MEMBER, mallory.group_users(group.group_id))
        # after logout the connection is a stranger again
        await mallory.logout()
        await expect_error(pb.UNAUTHENTICATED, mallory.me())

    shared.run(main)


@pytest.mark.timeout(120)
def test_a_busy_session_is_rate_limited_and_its_idempotent_calls_wait_their_turn(
    shared: SharedCluster,
) -> None:
    async def main(cluster: Cluster) -> None:
        alice = await user(cluster, "busy")
        burst = int(timing.SESSION_RATE_BURST) + 50
        # AddFriend is not idempotent: past the burst it fails at once; Me, sent right
        # behind them, is idempotent and retried until the limit lets it through
        *asked, me = await asyncio.gather(
            *(alice.add_friend(10**9 + i) for i in range(burst)),
            alice.me(),
            return_exceptions=True,
        )
        codes = [r.code for r in asked if isinstance(r, RpcError)]
        assert len(codes) == burst and pb.RATE_LIMITED in codes, codes
        assert alice.user and isinstance(me, client_pb2.MeReply), me
        assert me.user_id == alice.user.user_id

    shared.run(main)
