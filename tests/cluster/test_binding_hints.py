"""SyncHints go only to sessions whose router really changed.

A gateway re-sends each router the full list of its sessions every rebind snapshot; that must
not hint (and so make sync) a client whose session stays where it was. Idle clients of a real
cluster see no SyncHint over two snapshots, counted by the gateway's own metrics; when a second
router joins, exactly the sessions whose users it now owns get one hint each, and a later
snapshot adds none.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.cluster.test_presence import bound_where
from tests.cluster.test_storage import metric
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until
from tools.local_cluster import LOAD_TEST_LIMITS
from tui.session import ClientSession, EventKind

CLIENTS = 12
SNAPSHOTS = "soim_gateway_rebind_snapshots_total"
HINTS = "soim_gateway_sync_hints_total"


async def _gateway_metric(cluster: Cluster, name: str) -> float:
    return await asyncio.to_thread(metric, cluster, cluster.alive("gateway")[0], name)


async def _snapshots_pass(cluster: Cluster, count: int) -> None:
    """Wait until the gateway has sent `count` more rebind snapshots."""
    start = await _gateway_metric(cluster, SNAPSHOTS)

    async def passed() -> bool:
        return await _gateway_metric(cluster, SNAPSHOTS) >= start + count

    await async_wait_until(
        passed, timeout=6 * count + 5, interval=0.25, what=f"{count} rebind snapshots"
    )


def _hinted(clients: list[ClientSession], seen: dict[int, int]) -> dict[int, int]:
    """Add the SyncHints each client has received since the last call to `seen` (by index)."""
    for i, client in enumerate(clients):
        while not client.events.empty():
            event = client.events.get_nowait()
            if (
                event.kind is EventKind.PUSH
                and event.push is not None
                and event.push.WhichOneof("item") == "sync_hint"
            ):
                seen[i] = seen.get(i, 0) + 1
    return seen


@pytest.mark.timeout(90)
def test_idle_clients_get_no_sync_hint_and_moved_ones_get_one(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        async with running_cluster(
            tmp_path, cluster_name, f"sqlite:{tmp_path}/db", LOAD_TEST_LIMITS
        ) as cluster:
            first_router = (await cluster.start_all(routers=1))[1].node_id
            clients = [await cluster.client() for _ in range(CLIENTS)]
            users = [
                (await c.register(f"idle{i}", "correct horse")).user_id
                for i, c in enumerate(clients)
            ]
            await async_wait_until(
                lambda: _all_held_by(cluster, users, {first_router}),
                timeout=10,
                what="every session bound at the router",
            )
            hints = await _gateway_metric(cluster, HINTS)
            seen = _hinted(clients, {})

            await _snapshots_pass(cluster, 2)
            assert await _gateway_metric(cluster, HINTS) == hints
            assert _hinted(clients, seen) == {}

            second = cluster.start("router")
            await cluster.wait_alive(second)
            held = await async_wait_until(
                lambda: _all_held_by(cluster, users, set(cluster.alive("router"))),
                timeout=15,
                what="every session bound at its owner of the new ring",
            )
            moved = {i for i, u in enumerate(users) if held[u] == {second[0].node_id}}
            await async_wait_until(
                lambda: set(_hinted(clients, seen)) == moved,
                timeout=10,
                what=f"hints to the moved sessions {sorted(moved)}",
            )
            await _snapshots_pass(cluster, 1)
            assert await _gateway_metric(cluster, HINTS) == hints + len(moved)
            assert _hinted(clients, seen) == dict.fromkeys(moved, 1)

    asyncio.run(main())


async def _all_held_by(
    cluster: Cluster, users: list[int], routers: set[str]
) -> dict[int, set[str]] | None:
    """The holders of each user when every user is held by exactly one of `routers`, else
    None."""
    held = await bound_where(cluster, users)
    if any(len(h) != 1 or not h <= routers for h in held.values()):
        return None
    return held
