"""A storage node killed -9 under load (real processes, MariaDB, two storage nodes): only the
conversations it owned stall, and only until the survivor takes them over — noticed from the
broken link, well before the heartbeats would tell — while the survivor's own conversations
go on at their usual pace. One frozen for 5 s (SIGSTOP: its connections stay up) stalls its
own conversations until its heartbeats are missed, and again nobody else's. Nothing acked is
lost, duplicated or reordered."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from pathlib import Path

import pytest

from fabric import timing
from fabric.ring import Ring
from tests.cluster.failover_load import PacedLoad, check_nothing_lost, paired_members
from tests.cluster.test_storage import start_cluster
from tests.harness import running_cluster
from tests.support import async_wait_until

PAIRS = 10


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["kill", "freeze"])
def test_a_dead_storage_node_stalls_only_its_own_conversations(
    tmp_path: Path, cluster_name: str, mysql_db: str, how: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, mysql_db) as cluster:
            await start_cluster(cluster, storage=2, routers=1, gateways=2)
            members, targets = await paired_members(cluster, "f", PAIRS)
            load = PacedLoad(members, targets)
            running = asyncio.ensure_future(load.run())
            warm = time.monotonic()
            await async_wait_until(
                lambda: len(load.times) == PAIRS and load.acks_since(warm) >= 20,
                timeout=30,
                what="every conversation under load",
            )
            storage = [n for n in cluster.nodes if n.role == "storage"]
            ring = Ring(frozenset(n.node_id for n in storage))
            victim, survivor = storage
            window = 2.0 if how == "kill" else timing.PEER_DEAD_AFTER_S + 1.0
            if how == "kill":
                victim.kill()
            else:
                os.kill(victim.pid, signal.SIGSTOP)
            killed = time.monotonic()
            try:
                await async_wait_until(
                    lambda: load.acks_since(killed + window) >= 10,
                    timeout=30,
                    what="every conversation acked again after the kill",
                )
            finally:
                if how == "freeze":
                    os.kill(victim.pid, signal.SIGCONT)
            if how == "freeze":  # back: its conversations return to it
                await async_wait_until(
                    lambda: load.acks_since(time.monotonic() - 0.5) >= 2,
                    timeout=30,
                    what="chat after the frozen node is back",
                )
            load.stop()
            await running

            owned = {c: ring.owner(c) for c in load.times}
            lost = [c for c, o in owned.items() if o == victim.node_id]
            kept = [c for c, o in owned.items() if o == survivor.node_id]
            assert lost and kept, f"the {PAIRS} conversations all hash to one node: {owned}"
            # before: waits that ended by the kill (or were under way 0.3 s before it)
            before = max(load.max_gap(c, killed - 1.5, killed - 0.3) for c in load.times)
            survivors = max(load.max_gap(c, killed, killed + window) for c in kept)
            resumed = [load.max_gap(c, killed, killed + window) for c in lost]
            print(
                f"\nstorage {how}: survivors' max gap {survivors * 1000:.0f} ms "
                f"(before the kill {before * 1000:.0f} ms); the dead node's conversations' "
                f"longest wait: median {statistics.median(resumed) * 1000:.0f} ms, "
                f"max {max(resumed) * 1000:.0f} ms"
            )
            if how == "kill":  # noticed from the broken link: before PEER_DEAD_AFTER_S
                assert max(resumed) < timing.PEER_DEAD_AFTER_S
            # the survivor's conversations never waited for the dead node: their longest wait
            # is of the order of the longest before the kill
            assert survivors < max(resumed)
            assert survivors <= 3 * before + 0.2

            await check_nothing_lost(mysql_db, load, members)

    asyncio.run(main())
