"""How fast a dead node is noticed (real processes): a node killed -9 leaves the membership
when its broken connections cannot be re-made — well before PEER_DEAD_AFTER_S of missed
heartbeats — in every peer's view; a frozen node (SIGSTOP: its connections stay up) is
noticed by its heartbeats, and is alive again once it thaws. A node with a generated id
(announced without mDNS probing) joins."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fabric import timing
from tests.harness import running_cluster
from tests.processes import ROOT
from tests.support import async_wait_until


@pytest.mark.timeout(60)
def test_a_killed_node_is_noticed_by_its_links_a_frozen_one_by_its_heartbeats(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            directory, victim, frozen = nodes = cluster.start("directory") + cluster.start(
                "router", 2
            )
            await cluster.wait_alive(nodes)

            victim.kill()
            killed = time.monotonic()
            await async_wait_until(
                lambda: victim.node_id not in cluster.alive(),
                timeout=2 * timing.PEER_DEAD_AFTER_S,
                what="the kill -9 noticed",
            )
            noticed = time.monotonic() - killed
            print(f"\nkill -9 noticed by an observer after {noticed * 1000:.0f} ms")
            # by the link: the heartbeats would need more than PEER_DEAD_AFTER_S - one beat
            assert noticed < timing.PEER_DEAD_AFTER_S - timing.HEARTBEAT_INTERVAL_S
            for peer in (directory, frozen):  # every peer noticed it that way too
                await async_wait_until(
                    lambda p=peer: f"peer {victim.node_id}: its link broke" in p.log(),
                    timeout=5,
                    what=f"{peer.node_id} noticed the broken link",
                )

            os.kill(frozen.pid, signal.SIGSTOP)
            try:
                stopped = time.monotonic()
                await async_wait_until(
                    lambda: frozen.node_id not in cluster.alive(),
                    timeout=3 * timing.PEER_DEAD_AFTER_S,
                    what="the frozen node noticed",
                )
                # by its silence: its last beat came at most a beat (and some lag) before
                lag = timing.HEARTBEAT_INTERVAL_S + 0.5
                assert time.monotonic() - stopped >= timing.PEER_DEAD_AFTER_S - lag
                assert f"peer {frozen.node_id}: its link broke" not in directory.log()
            finally:
                os.kill(frozen.pid, signal.SIGCONT)
            await cluster.wait_alive([frozen], timeout=3 * timing.PEER_DEAD_AFTER_S)
            assert directory.node_id in cluster.alive()

            # a node given no SOIM_NODE_ID (a random id: it announces without mDNS probing)
            env = {k: v for k, v in {**os.environ, **cluster.env}.items() if k != "SOIM_NODE_ID"}
            known = set(cluster.alive())
            fresh = subprocess.Popen(
                [sys.executable, "-m", "nodes.router"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                await async_wait_until(
                    lambda: set(cluster.alive("router")) - known,
                    timeout=20,
                    what="a router with a generated id alive",
                )
            finally:
                fresh.terminate()
                await asyncio.to_thread(fresh.wait, 10)

    asyncio.run(main())
