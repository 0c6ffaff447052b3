"""SyncHints go to the sessions whose router really changed, and to those bound late.

A gateway re-sends each router the full list of its sessions every rebind snapshot; that must
not hint (and so make sync) a client whose session stays where it was. Idle clients of a real
cluster see no SyncHint over two snapshots, counted by the gateway's own metrics; when a second
router joins, exactly the sessions whose users it now owns get one hint each, and a later
snapshot adds none. Sessions that logged in while no router was known get one hint each once
they are bound, and the message sent to one of them meanwhile reaches it by that sync.
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


@pytest.mark.timeout(90)
def test_a_session_bound_late_gets_one_hint_and_what_it_missed(
    tmp_path: Path, cluster_name: str
) -> None:
    """Sessions that log in while their gateway knows no router cannot be bound then, and a
    message sent meanwhile reaches no router; once a router joins and the gateway binds them,
    each gets one SyncHint, and the recipient's sync fetches that message."""

    async def main() -> None:
        async with running_cluster(
            tmp_path, cluster_name, f"sqlite:{tmp_path}/db", LOAD_TEST_LIMITS
        ) as cluster:
            nodes = cluster.start("directory") + cluster.start("storage")
            nodes += cluster.start("gateway")
            await cluster.wait_alive(nodes)
            alice, bob = await cluster.client(), await cluster.client()
            a = (await alice.register("alice", "correct horse")).user_id
            b = (await bob.register("bob", "correct horse")).user_id
            await alice.add_friend(b)
            await bob.add_friend(a)
            ack = await alice.send("while no router was up", to_user=b)

            router = cluster.start("router")
            await cluster.wait_alive(router)
            await async_wait_until(
                lambda: _all_held_by(cluster, [a, b], {router[0].node_id}),
                timeout=15,
                what="both sessions bound at the router",
            )
            seen: dict[int, int] = {}
            await async_wait_until(
                lambda: len(_hinted([alice, bob], seen)) == 2,
                timeout=10,
                what="a SyncHint to each late-bound session",
            )
            await async_wait_until(
                lambda: bob.tracker.last.get(ack.conv_id, 0) >= ack.seq,
                timeout=10,
                what="bob has the message sent while no router was up",
            )
            await _snapshots_pass(cluster, 1)
            assert _hinted([alice, bob], seen) == {0: 1, 1: 1}

    asyncio.run(main())
