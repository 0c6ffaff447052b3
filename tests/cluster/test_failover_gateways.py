"""Sessions rebalance across gateways after a failover (real processes, MariaDB): a gateway
killed -9 under load sends all its clients to the other one; when it is back on its port the
loaded gateway redirects some of its clients to it, a few per round, until the two hold about
as many each — and it stays so; through it all nothing acked is lost, duplicated or reordered."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from fabric import timing
from tests.cluster.failover_load import PacedLoad, check_nothing_lost, paired_members
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until, free_port

PAIRS = 8


def counts(cluster: Cluster, ids: list[str]) -> list[int]:
    """Each gateway's sessions by its last heartbeat (0 for one not alive)."""
    assert cluster.view is not None
    peers = [cluster.view.membership.get(i) for i in ids]
    return [p.sessions if p is not None else 0 for p in peers]


@pytest.mark.timeout(120)
def test_sessions_move_back_gradually_to_a_gateway_that_returns(
    tmp_path: Path, cluster_name: str, mysql_db: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, mysql_db) as cluster:
            ports = [str(free_port()) for _ in range(2)]
            gateways = [g for p in ports for g in cluster.start("gateway", SOIM_GATEWAY_PORT=p)]
            nodes = cluster.start("directory") + cluster.start("router") + cluster.start("storage")
            await cluster.wait_alive(nodes + gateways)
            members, targets = await paired_members(cluster, "g", PAIRS)
            load = PacedLoad(members, targets)
            running = asyncio.ensure_future(load.run())
            total = 2 * PAIRS

            victim = gateways[0]
            port = ports[0]
            survivor = gateways[1]
            victim.kill()
            await async_wait_until(
                lambda: counts(cluster, [survivor.node_id]) == [total],
                timeout=20,
                what="every session on the surviving gateway",
            )
            [back] = cluster.start("gateway", SOIM_GATEWAY_PORT=port)
            await cluster.wait_alive([back])
            returned = time.monotonic()
            ids = [survivor.node_id, back.node_id]
            samples: list[tuple[float, list[int]]] = []

            def balanced() -> bool:
                samples.append((time.monotonic(), counts(cluster, ids)))
                a, b = samples[-1][1]
                return a + b == total and abs(a - b) <= 2 * timing.REBALANCE_SLACK

            await async_wait_until(balanced, timeout=30, what="sessions balanced again")
            took = time.monotonic() - returned
            # it stays balanced: a few more rounds move nothing back and forth
            settle = time.monotonic() + 3 * timing.REBALANCE_INTERVAL_S
            await async_wait_until(lambda: time.monotonic() > settle, timeout=10, what="rounds")
            assert balanced(), samples[-1]
            # gradual: the returning gateway never gained more than a round's worth per beat
            gains = [b2 - b1 for (_, (_, b1)), (_, (_, b2)) in itertools.pairwise(samples)]
            print(
                f"\ngateway back: balanced {samples[-1][1]} after {took * 1000:.0f} ms; "
                f"largest gain between two beats {max(gains)}"
            )
            assert max(gains) <= timing.REBALANCE_PER_ROUND

            sent = len(load.acked)
            await async_wait_until(
                lambda: len(load.acked) >= sent + 2 * total, timeout=20, what="chat goes on"
            )
            load.stop()
            await running
            await check_nothing_lost(mysql_db, load, members)

    asyncio.run(main())
