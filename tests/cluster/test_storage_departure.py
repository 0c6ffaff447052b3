"""What clients see when the storage node goes away (real processes, SQLite): a death makes
every client sync, and a send answered UNAVAILABLE by a gateway that still answers waits on the
same link until storage is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schema import client_pb2
from schema import common_pb2 as pb
from tests.cluster.test_storage import befriend, register, start_cluster
from tests.harness import running_cluster
from tests.support import async_wait_until, expect_error
from tui.session import EventKind


@pytest.mark.timeout(90)
def test_a_storage_node_death_makes_every_client_sync(tmp_path: Path, cluster_name: str) -> None:
    """A storage node killed -9 may have committed messages whose pushes never left: every
    gateway tells each of its clients to sync (SyncHint STORAGE_CHANGED) once it notices."""

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await start_cluster(cluster, storage=2, routers=1)
            members = [await register(cluster, f"hint{i}", i % 2) for i in range(4)]
            victim = next(n for n in cluster.nodes if n.role == "storage")
            victim.kill()
            for m in members:
                await async_wait_until(
                    lambda m=m: any(
                        p.WhichOneof("item") == "sync_hint"
                        and p.sync_hint.reason == client_pb2.SYNC_REASON_STORAGE_CHANGED
                        for p in m.pushes
                    ),
                    timeout=8,
                    what="a STORAGE_CHANGED sync hint",
                )

    asyncio.run(main())


@pytest.mark.timeout(90)
def test_a_send_waits_on_the_same_link_while_no_storage_node_is_alive(
    tmp_path: Path, cluster_name: str
) -> None:
    """UNAVAILABLE from a gateway that answers is "later", not a dead link: the client retries
    the send on the same connection (no reconnect, no DISCONNECTED) until storage is back."""

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await start_cluster(cluster, routers=1, gateways=1)
            alice, bob = [await register(cluster, name, 0) for name in ("alice", "bob")]
            await befriend(alice, bob)
            [storage] = [n for n in cluster.nodes if n.role == "storage"]
            storage.kill()
            await async_wait_until(
                lambda: not cluster.alive("storage"),
                timeout=6,
                what="the storage node's death noticed",
            )
            await expect_error(
                pb.UNAVAILABLE,
                alice.client.call(
                    "Send",
                    client_pb2.SendRequest(client_msg_id="probe", body="now?", to_user=bob.id),
                ),
            )  # the gateway's answer
            sending = asyncio.ensure_future(alice.client.send("later", to_user=bob.id))
            await cluster.wait_alive(cluster.start("storage"))
            ack = await asyncio.wait_for(sending, 20)
            assert ack.seq == 1
            events = alice.client.events
            kinds = [events.get_nowait().kind for _ in range(events.qsize())]
            assert EventKind.DISCONNECTED not in kinds

    asyncio.run(main())
