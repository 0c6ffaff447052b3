"""Every node killed -9 under load and started again (real processes, MariaDB, gateways on their
old ports): the clients chat again soon after the restart — how soon is printed, split into the
nodes' start-up and the clients' return — and nothing acked is lost, duplicated or reordered."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest

from tests.cluster.failover_load import PacedLoad, check_nothing_lost, paired_members
from tests.harness import running_cluster
from tests.support import async_wait_until, free_port

PAIRS = 5


@pytest.mark.timeout(120)
def test_after_every_node_is_killed_and_restarted_clients_chat_again(
    tmp_path: Path, cluster_name: str, mysql_db: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, mysql_db) as cluster:
            ports = [str(free_port()) for _ in range(2)]
            nodes = (
                cluster.start("directory")
                + cluster.start("router")
                + cluster.start("storage")
                + [g for port in ports for g in cluster.start("gateway", SOIM_GATEWAY_PORT=port)]
            )
            await cluster.wait_alive(nodes)
            members, targets = await paired_members(cluster, "r", PAIRS)
            load = PacedLoad(members, targets)
            running = asyncio.ensure_future(load.run())
            warm = time.monotonic()
            await async_wait_until(
                lambda: len(load.times) == PAIRS and load.acks_since(warm) >= 10,
                timeout=30,
                what="every conversation under load",
            )

            for node in nodes:
                node.kill()
            for node in nodes:
                await asyncio.to_thread(node.wait, 5)
            restarted = time.monotonic()
            fresh = (
                cluster.start("directory")
                + cluster.start("router")
                + cluster.start("storage")
                + [g for port in ports for g in cluster.start("gateway", SOIM_GATEWAY_PORT=port)]
            )
            await cluster.wait_alive(fresh, timeout=30)
            alive = time.monotonic() - restarted
            await async_wait_until(
                lambda: load.acks_since(restarted) >= 5,
                timeout=30,
                what="every conversation acked again after the restart",
            )
            load.stop()
            await running

            back = [load.stall(c, restarted) for c in load.times]
            print(
                f"\nall nodes kill -9 and restart: every node alive in the view after "
                f"{alive * 1000:.0f} ms; conversations acked again after median "
                f"{statistics.median(back) * 1000:.0f} ms, max {max(back) * 1000:.0f} ms"
            )

            await check_nothing_lost(mysql_db, load, members)

    asyncio.run(main())
