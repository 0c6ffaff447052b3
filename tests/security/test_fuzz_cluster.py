"""Fuzz of the cluster plane: 100,000+ random and mutated frames at the RPC ROUTERs of a
directory, a router, a storage node and two gateways, sent with the cluster's own node key
(an authenticated peer), while legitimate users chat.

An authenticated peer is trusted with data (it may store messages, bind sessions …), so the
point is not refusal but robustness: valid method names of each role with random and mutated
payloads must never crash a node, log a traceback or grow its memory past RSS_SLACK_BYTES. The
fuzzer's ids come from users, a friendship and a group of its own; it never names the chatting
users' ids (nor calls node.Drain), so what they see is only the load. The run is seeded: the
seed is printed, and SOIM_FUZZ_SEED=<seed> replays it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from fabric import keys, timing
from fabric.methods import ECHO, NODE, STATUS, Method
from schema.contracts.directory import DIRECTORY
from schema.contracts.router import ROUTER
from schema.contracts.storage import STORAGE
from tests.harness import Cluster, running_cluster
from tests.security.chatter import Chatter
from tests.security.fuzzer import (
    Blaster,
    FrameFactory,
    NodeWatch,
    assert_nodes_healthy,
    seed_from_env,
)

FRAMES = 100_000
CONNECTIONS_PER_NODE = 2
OVERSIZED_PER_NODE = 4
"""Frames over CLUSTER_MAX_FRAME_BYTES (4 MiB each: a few, not a share of 100,000)."""
RSS_SLACK_BYTES = 50 * 1024 * 1024
COMMON = [ECHO, STATUS, *(m for name, m in NODE.items() if name != "Drain")]
"""Served by every node; node.Drain is left out: a peer holding the key may drain a node."""
TABLES: dict[str, list[Method]] = {
    "directory": [*DIRECTORY.values(), *COMMON],
    "router": [*ROUTER.values(), *COMMON],
    "storage": [*STORAGE.values(), *COMMON],
    "gateway": COMMON,
}


def node_client(pair: keys.KeyPair, server_key: bytes) -> Callable[[zmq.Socket], None]:
    """Socket setup of a peer node: the cluster's node keypair, the target's server key."""

    def setup(sock: zmq.Socket) -> None:
        sock.curve_publickey, sock.curve_secretkey = pair.public, pair.secret
        sock.curve_serverkey = server_key

    return setup


def fuzz_nodes(
    targets: list[tuple[str, str, bytes]],
    pair: keys.KeyPair,
    ids: list[int],
    strings: list[str],
    avoid: frozenset[int],
    seed: int,
    watches: list[NodeWatch],
) -> dict[str, object]:
    """Send the frames round robin over the nodes (a thread of its own: sync sockets)."""
    rng = random.Random(seed)
    ctx = zmq.Context()
    try:
        began = time.monotonic()
        blasters = [
            Blaster(ctx, endpoint, node_client(pair, key), CONNECTIONS_PER_NODE)
            for _, endpoint, key in targets
        ]
        factories = [
            FrameFactory(
                rng,
                TABLES[role],
                ids,
                timing.CLUSTER_MAX_FRAME_BYTES,
                oversized=False,
                strings=strings,
                avoid=avoid,
            )
            for role, _, _ in targets
        ]
        for n in range(FRAMES):
            k = n % len(targets)
            blasters[k].send(factories[k].message(), n // len(targets))
            if n % 5000 == 0:
                for watch in watches:
                    watch.sample()
        for blaster, factory in zip(blasters, factories, strict=True):
            for n in range(OVERSIZED_PER_NODE):
                blaster.send(factory.oversized(), n)
        for blaster in blasters:
            blaster.close()
        return {
            "seconds": round(time.monotonic() - began, 1),
            "sent": sum(b.sent for b in blasters),
            "answered": sum(sum(b.replies.values()) for b in blasters),
            "replaced_connections": sum(b.replaced for b in blasters),
            **{
                f"replies_{role}": dict(b.replies.most_common(8))
                for (role, _, _), b in zip(targets, blasters, strict=True)
            },
        }
    finally:
        ctx.destroy(linger=0)


async def fuzz_material(cluster: Cluster) -> tuple[list[int], list[str]]:
    """Ids and strings of the fuzzer's own: two friends, a group, their tokens."""
    a, b = await cluster.client(0, device="fz-a"), await cluster.client(1, device="fz-b")
    ra = await a.register(f"fz{cluster.env['SOIM_CLUSTER']}a", "fuzz password 1")
    rb = await b.register(f"fz{cluster.env['SOIM_CLUSTER']}b", "fuzz password 1")
    await a.add_friend(rb.user_id)
    conv = (await b.add_friend(ra.user_id)).conv_id
    group = (await a.group_create("fuzz-room")).group.group_id
    await b.group_join(group)
    await a.send("hello", to_user=rb.user_id)
    assert cluster.view is not None
    node_ids = [p.node_id for p in cluster.view.membership.alive()]
    return [ra.user_id, rb.user_id, conv, group], [a.token, b.token, ra.token, *node_ids]


@pytest.mark.timeout(180)
def test_100k_hostile_frames_from_a_key_holding_peer_break_no_node(
    tmp_path: Path, cluster_name: str
) -> None:
    seed = seed_from_env()
    print(f"fuzz seed {seed} (replay with SOIM_FUZZ_SEED={seed})")

    async def main() -> None:
        db = f"sqlite:{tmp_path / 'data'}"
        async with running_cluster(tmp_path, cluster_name, db) as cluster:
            await cluster.start_all(gateways=2)
            assert cluster.view is not None
            peers = cluster.view.membership.alive()
            targets = [(p.role, p.info.endpoints["rpc"], p.info.public_key.encode()) for p in peers]
            by_id = {n.node_id: n for n in cluster.nodes}
            watches = [NodeWatch(by_id[p.node_id].pid) for p in peers]
            pair = keys.load_node(cluster.keys_dir)
            async with Chatter(cluster, users=3, group=True, min_acked=20) as chat:
                ids, strings = await fuzz_material(cluster)
                avoid = frozenset(
                    [u.user_id for u in chat.users] + [*chat.pair_conv.values(), chat.group_id]
                )
                figures = await asyncio.to_thread(
                    fuzz_nodes, targets, pair, ids, strings, avoid, seed, watches
                )
                print(f"fuzz: {figures}")
                assert figures["sent"] >= FRAMES
                assert figures["answered"] >= figures["sent"] // 10, "the frames went nowhere"
            print(f"chat: {chat.summary()}")
            assert_nodes_healthy(cluster.nodes)
            grown = []
            for peer, watch in zip(peers, watches, strict=True):
                after = watch.sample()
                print(
                    f"{peer.node_id} RSS: baseline {watch.baseline >> 20} MiB, peak "
                    f"{watch.peak >> 20} MiB, after {after >> 20} MiB"
                )
                if after - watch.baseline >= RSS_SLACK_BYTES:
                    grown.append(peer.node_id)
            assert not grown, f"RSS grew by 50 MB or more: {grown}"

    asyncio.run(main())
