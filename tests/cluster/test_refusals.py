"""Guarantee 4 for messages, through real processes: a 1:1 send to a non-friend, to oneself or
to an account that does not exist, a send to a group one is not in, an empty body and a body
over 4,000 characters each get their own error code, and nothing is stored for them; nobody
reads a conversation they are not part of."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schema import client_pb2
from schema import common_pb2 as pb
from shard_store import Store
from tests.harness import running_cluster
from tests.shard_store.conftest import stored_messages
from tests.support import expect_error

PASSWORD = "correct horse"


@pytest.mark.timeout(120)
def test_refused_sends_get_their_codes_and_store_nothing(tmp_path: Path, cluster_name: str) -> None:
    db = f"sqlite:{tmp_path / 'data'}"

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, db) as cluster:
            nodes = (
                cluster.start("directory")
                + cluster.start("router")
                + cluster.start("storage")
                + cluster.start("gateway")
            )
            await cluster.wait_alive(nodes)
            alice, bob, carol = [await cluster.client() for _ in range(3)]
            for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
                await client.register(name, PASSWORD)
            assert alice.user and bob.user and carol.user
            await bob.add_friend(carol.user.user_id)
            conv = (await carol.add_friend(bob.user.user_id)).conv_id
            group = (await bob.group_create("closed")).group.group_id

            def send(body: str, **to: int) -> object:
                return alice.call(
                    "Send", client_pb2.SendRequest(client_msg_id="m1", body=body, **to)
                )

            await expect_error(pb.NOT_FRIEND, send("hi", to_user=bob.user.user_id))
            await expect_error(pb.SELF_MESSAGE, send("hi", to_user=alice.user.user_id))
            await expect_error(pb.NOT_FOUND, send("hi", to_user=987_654_321))
            await expect_error(pb.NOT_MEMBER, send("hi", to_group=group))
            await expect_error(pb.EMPTY_BODY, send("   ", to_user=bob.user.user_id))
            await expect_error(pb.BODY_TOO_LONG, send("x" * 4001, to_user=bob.user.user_id))
            await expect_error(pb.INVALID_ARGUMENT, send("hi"))
            # nor can she read, mark or count a conversation that is not hers
            await expect_error(pb.NOT_FOUND, alice.history(conv))
            await expect_error(pb.NOT_FOUND, alice.read(conv, 1))
            await expect_error(pb.NOT_MEMBER, alice.group_read_counts(group, 1, 1))

            # the members themselves can: 4,000 characters is allowed
            ack = await bob.send("y" * 4000, to_user=carol.user.user_id)
            assert ack.seq == 1
            await bob.send("hello group", to_group=group)

        with Store.open(db, 8) as store:
            rows = stored_messages(store)
        assert sorted((r.sender, len(r.body)) for r in rows) == [
            (bob.user.user_id, 11),
            (bob.user.user_id, 4000),
        ]

    asyncio.run(main())
