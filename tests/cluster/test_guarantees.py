"""Guarantees 1-3 under load while kill -9 hits, in turn, a gateway, a router, a storage node
and at last every node (real processes, MariaDB): after restart and recovery every client's
view equals the database — the same messages, in the same order for every member, seqs
contiguous from 1, no gaps, no duplicates, every acknowledged message there exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.cluster.test_storage import Member, Senders, check_database, history, pairs_and_a_group
from tests.harness import Cluster, running_cluster
from tests.processes import NodeProcess
from tests.support import async_wait_until, free_port

USERS = 20  # 10 friend pairs; the odd half also posts to one 20-member group
PER_STREAM = 150  # sends per stream, two streams per user: 6,000 messages


async def restart(
    cluster: Cluster, victims: list[NodeProcess], ports: dict[str, str]
) -> list[NodeProcess]:
    """kill -9 the victims, then start the same roles again (gateways on their old ports)."""
    for node in victims:
        node.kill()
    for node in victims:
        await asyncio.to_thread(node.wait, 5)
    started: list[NodeProcess] = []
    for node in victims:
        env = {"SOIM_GATEWAY_PORT": ports[node.node_id]} if node.role == "gateway" else {}
        [fresh] = cluster.start(node.role, **env)
        if node.role == "gateway":
            ports[fresh.node_id] = ports[node.node_id]
        started.append(fresh)
    await cluster.wait_alive(started, timeout=30)
    return started


@pytest.mark.timeout(300)
def test_nothing_acked_is_lost_or_reordered_through_kill_9_of_every_kind_of_node(
    tmp_path: Path, cluster_name: str, mysql_db: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, mysql_db) as cluster:
            ports: dict[str, str] = {}
            gateways = []
            for _ in range(2):
                port = str(free_port())
                [gw] = cluster.start("gateway", SOIM_GATEWAY_PORT=port)
                ports[gw.node_id] = port
                gateways.append(gw)
            nodes = (
                cluster.start("directory")
                + cluster.start("router", 2)
                + cluster.start("storage", 2)
                + gateways
            )
            await cluster.wait_alive(nodes)
            members, targets = await pairs_and_a_group(cluster, USERS)
            senders = Senders(members, targets)
            live = list(nodes)

            total = USERS * 2 * PER_STREAM
            killed_at: list[int] = []

            async def at(share: float) -> None:
                goal = int(total * share)
                await async_wait_until(
                    lambda: len(senders.acked) >= goal, timeout=120, what=f"{goal} acks"
                )
                killed_at.append(len(senders.acked))

            async def chaos() -> None:
                for role, share in (("gateway", 0.1), ("router", 0.25), ("storage", 0.4)):
                    await at(share)
                    victim = next(n for n in live if n.role == role)
                    live.remove(victim)
                    live.extend(await restart(cluster, [victim], ports))
                await at(0.55)
                everyone = list(live)
                live.clear()
                live.extend(await restart(cluster, everyone, ports))

            await asyncio.gather(senders.run(per_stream=PER_STREAM), chaos())
            assert len(senders.acked) == total
            assert all(n < total for n in killed_at), f"kills came after the load: {killed_at}"

            # guarantee 1 and 2: the database holds every ack once, as acked, seqs 1..n
            await asyncio.to_thread(check_database, mysql_db, senders.acked)
            # guarantee 3: every member's view, after a sync, is the stored conversation
            await asyncio.gather(*(m.client.catch_up() for m in members))
            convs = {a.conv_id for a in senders.acked.values()}
            for conv in convs:
                parties = [m for m in members if conv in m.client.tracker.last]
                assert parties, f"nobody is in conversation {conv}"
                stored = [(x.seq, x.msg_id) for x in await history(parties[0], conv)]
                assert [s for s, _ in stored] == list(range(1, len(stored) + 1))
                for member in parties:
                    seen = [(x.seq, x.msg_id) for x in member.seen(conv)]
                    assert seen == stored, f"{member.id} in {conv}: {len(seen)} vs {len(stored)}"
            assert_every_member_is_in_its_conversations(members, convs)

    asyncio.run(main())


def assert_every_member_is_in_its_conversations(members: list[Member], convs: set[int]) -> None:
    """Everyone has seen two of the busy conversations: the one with their friend and the
    group (all of them are members of it)."""
    for member in members:
        assert len(set(member.client.tracker.last) & convs) == 2, member.id
