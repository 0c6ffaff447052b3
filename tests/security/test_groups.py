"""Group visibility and history rules, on a real cluster (SQLite and MariaDB).

Before, anyone could join any group by its id and read its whole history. Now a new group is
public with history from join: a member reads (History, Sync's unread, GroupReadCounts) only
what was stored after they joined, until the owner opens the history to all; an invite-only
group is joined only by users its owner invited, and GroupSearch lists it to members only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schema import client_pb2 as c
from schema import common_pb2 as pb
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until, expect_error
from tui.session import ClientSession

PASSWORD = "correct horse"


@pytest.fixture(params=["sqlite", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SOIM_DB: embedded SQLite, or a fresh MariaDB database."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'data'}"
    return str(request.getfixturevalue("mysql_db"))


async def user(cluster: Cluster, account: str) -> ClientSession:
    client = await cluster.client()
    await client.register(account, PASSWORD)
    return client


async def bodies(client: ClientSession, group: int, **position: int) -> list[str]:
    reply = await client.call("History", c.HistoryRequest(conv_id=group, **position))
    return [m.body for m in reply.messages]


async def next_notice(client: ClientSession, timeout: float = 5.0) -> c.Notice:
    async with asyncio.timeout(timeout):
        while True:
            event = await client.events.get()
            if event.push is not None and event.push.WhichOneof("item") == "notice":
                return event.push.notice


@pytest.mark.timeout(60)
def test_history_from_join_and_invite_only(tmp_path: Path, cluster_name: str, db_url: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, db_url) as cluster:
            await cluster.start_all()
            alice, bob, carol = [await user(cluster, n) for n in ("alice", "bob", "carol")]
            assert alice.user and bob.user and carol.user

            # defaults: public, history from join
            room = (await alice.group_create("open room")).group
            assert (room.visibility, room.history) == (c.GROUP_PUBLIC, c.GROUP_HISTORY_FROM_JOIN)
            g = room.group_id
            for text in ("before 1", "before 2"):
                await alice.send(text, to_group=g)
            assert (await bob.group_join(g)).group.members == 2
            assert await bodies(bob, g) == []
            assert await bodies(bob, g, after_seq=0) == []
            await alice.send("after", to_group=g)
            assert await bodies(bob, g) == ["after"]
            assert await bodies(bob, g, after_seq=0) == ["after"]
            assert await bodies(bob, g, before_seq=3) == []
            assert (await bob.call("History", c.HistoryRequest(conv_id=g))).more is False
            [conv] = (await bob.call("Sync", c.SyncRequest(conv_ids=[g]))).conversations
            assert (conv.floor_seq, conv.last_seq, conv.read_seq, conv.unread) == (2, 3, 2, 1)
            counts = await bob.call(
                "GroupReadCounts", c.GroupReadCountsRequest(conv_id=g, from_seq=1, to_seq=3)
            )
            assert [x.seq for x in counts.counts] == [3]
            assert await bodies(alice, g) == ["before 1", "before 2", "after"]

            # only the owner changes the rules; opening the history reaches bob at once
            await expect_error(
                pb.FORBIDDEN,
                bob.call(
                    "GroupSettings", c.GroupSettingsRequest(group_id=g, history=c.GROUP_HISTORY_ALL)
                ),
            )
            opened = await alice.call(
                "GroupSettings", c.GroupSettingsRequest(group_id=g, history=c.GROUP_HISTORY_ALL)
            )
            assert (opened.group.visibility, opened.group.history) == (
                c.GROUP_PUBLIC,
                c.GROUP_HISTORY_ALL,
            )

            async def bob_reads_all() -> bool:
                return len(await bodies(bob, g)) == 3

            await async_wait_until(bob_reads_all, timeout=3, what="history opened to bob")

            # invite-only: no join by id, not found by search, unless invited / a member
            secret = (
                await alice.call(
                    "GroupCreate",
                    c.GroupCreateRequest(name="secret room", visibility=c.GROUP_INVITE_ONLY),
                )
            ).group
            s = secret.group_id
            await alice.send("secret 1", to_group=s)
            await expect_error(pb.FORBIDDEN, carol.group_join(s))
            await expect_error(pb.NOT_MEMBER, carol.history(s))
            assert [x.name for x in (await carol.group_search("secret")).groups] == []
            assert [x.name for x in (await carol.group_search("open")).groups] == ["open room"]
            assert [x.name for x in (await alice.group_search("secret")).groups] == ["secret room"]
            await expect_error(
                pb.FORBIDDEN,
                bob.call(
                    "GroupInvite", c.GroupInviteRequest(group_id=s, user_id=carol.user.user_id)
                ),
            )
            for _ in range(2):  # inviting twice leaves one invitation
                await alice.call(
                    "GroupInvite", c.GroupInviteRequest(group_id=s, user_id=carol.user.user_id)
                )
            notice = await next_notice(carol)
            assert (notice.kind, notice.conv_id) == (c.NOTICE_GROUP_INVITE, s)
            assert (await carol.group_join(s)).group.members == 2
            assert await bodies(carol, s) == []  # from join, the default
            assert [x.name for x in (await carol.group_search("secret")).groups] == ["secret room"]
            await expect_error(
                pb.ALREADY_MEMBER,
                alice.call(
                    "GroupInvite", c.GroupInviteRequest(group_id=s, user_id=carol.user.user_id)
                ),
            )
            # leaving spends the invitation; the owner needs none
            await carol.group_leave(s)
            await expect_error(pb.FORBIDDEN, carol.group_join(s))
            await alice.group_leave(s)
            assert (await alice.group_join(s)).group.members == 1
            await expect_error(
                pb.INVALID_ARGUMENT,
                alice.call("GroupSettings", c.GroupSettingsRequest(group_id=s, visibility=7)),
            )

    asyncio.run(main())
