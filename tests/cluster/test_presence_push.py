"""Presence pushes through real processes (SQLite, two gateways, one router, then two): the
contacts of a user hear once when it comes online and once, after the grace, when its last
session ends; a second device, one device of two logging out, and a session resumed on another
gateway within the grace announce nothing; a friend and a co-member hear, a stranger and a user
it has blocked do not (a user who blocked it does: its own Contacts show it online); a router
joining the ring announces no one. An offline whose grace ends after a router joined and took
the user is still announced, unless the user has a session at its new router by then; a router
that stops announces the offlines still in their grace.

No push is proved absent by waiting: each step ends with a barrier — a marker user (a co-member
of every observer) coming online or going offline after the step. A router's announcements go
out one pass after another in the order they arose and its pushes reach a gateway in order, so
an observer that has the barrier has everything its router announced before it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fabric.ring import Ring
from nodes.router.announce import OFFLINE_GRACE_S
from schema import client_pb2, cluster_pb2
from schema.contracts.router import ROUTER
from tests.cluster.test_storage import metric
from tests.harness import Cluster, running_cluster
from tests.processes import NodeProcess
from tests.support import async_wait_until
from tui.session import ClientSession, EventKind

PASSWORD = "correct horse"
Seen = tuple[int, bool]
"""(user id, online) of a Presence push."""


async def until(
    client: ClientSession, *barriers: Seen, times: dict[Seen, float] | None = None
) -> list[Seen]:
    """The Presence pushes `client` gets before it has had every one of `barriers` (when each
    came, into `times`)."""
    wanted = set(barriers)
    seen: list[Seen] = []
    async with asyncio.timeout(15):
        while wanted:
            event = await client.events.get()
            if event.kind is not EventKind.PUSH or event.push is None:
                continue
            if event.push.WhichOneof("item") != "presence":
                continue
            item = (event.push.presence.user_id, event.push.presence.online)
            if times is not None:
                times[item] = time.monotonic()
            if item in wanted:
                wanted.discard(item)
            else:
                seen.append(item)
    return seen


async def sessions_at(cluster: Cluster, user_id: int) -> dict[str, int]:
    """router → how many sessions of `user_id` it holds."""
    assert cluster.view is not None
    out: dict[str, int] = {}
    for router in cluster.alive("router"):
        reply = await cluster.view.peers.get(router).call(
            ROUTER["Lookup"], cluster_pb2.UserIds(user_ids=[user_id]), timeout=3
        )
        if reply.users[0].sessions:
            out[router] = len(reply.users[0].sessions)
    return out


async def all_at_owner(cluster: Cluster, user_ids: list[int]) -> bool:
    ring = Ring(cluster.alive("router"))
    for user_id in user_ids:
        if set(await sessions_at(cluster, user_id)) != {ring.owner(user_id)}:
            return False
    return True


@pytest.mark.timeout(60)
def test_presence_pushes(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            nodes = await cluster.start_all(gateways=2)
            [router] = [n for n in nodes if n.role == "router"]
            await presence_pushes(cluster, router)

    asyncio.run(main())


async def presence_pushes(cluster: Cluster, router: NodeProcess) -> None:
    started = time.monotonic()
    names = ["alice", "carol", "sam", "bert", "bea"]
    observers = {n: await cluster.client(i % 2) for i, n in enumerate(names)}
    alice, carol, sam, bert, bea = observers.values()
    ids = {n: (await c.register(n, PASSWORD)).user_id for n, c in observers.items()}
    bob1 = await cluster.client(1, device="phone")
    b = (await bob1.register("bob", PASSWORD)).user_id
    markers = [await cluster.client(i % 2) for i in range(6)]
    m = [(await c.register(f"mark{i}", PASSWORD)).user_id for i, c in enumerate(markers)]

    # alice and bert are bob's friends, carol a co-member; sam a stranger; bob blocks bert;
    # bea, a friend, blocks bob (she still sees him online, as her friend list says)
    for name in ("alice", "bert", "bea"):
        await observers[name].add_friend(b)
        await bob1.add_friend(ids[name])
    await bob1.call("Block", client_pb2.BlockRequest(user_id=ids["bert"]))
    await bea.call("Block", client_pb2.BlockRequest(user_id=b))
    den = (await carol.group_create("den")).group.group_id
    await bob1.group_join(den)
    marks = (await alice.group_create("marks")).group.group_id  # every observer, no bob
    for client in [*observers.values(), *markers]:
        if client is not alice:
            await client.group_join(marks)
    friends = {f.user_id: f.online for f in (await bea.friends()).friends}
    assert friends[b] is True

    # everyone but the observers goes offline: what setup announced is drained with the last
    # marker's offline, and the markers can then come online as barriers
    await bob1.logout()
    for client in markers:
        await client.logout()
    for client in observers.values():
        await until(client, (m[-1], False))
    sees, hidden = {alice, carol, bea}, {sam, bert}
    assert sees | hidden == set(observers.values())

    came: dict[Seen, float] = {}  # when alice got each push

    async def step(*barriers: Seen) -> dict[ClientSession, list[Seen]]:
        got = await asyncio.gather(
            *(until(c, *barriers, times=came if c is alice else None) for c in observers.values())
        )
        return dict(zip(observers.values(), got, strict=True))

    async def marker_in(i: int) -> None:
        """Marker i logs in, on a new connection (a gateway closes one left without a session
        for SOIM_AUTH_DEADLINE_S)."""
        markers[i] = await cluster.client(i % 2)
        await markers[i].login(f"mark{i}", PASSWORD)

    # bob logs in: his friends and co-members hear it once; the stranger and bert do not
    bob1 = await cluster.client(1, device="phone")
    await bob1.login("bob", PASSWORD)
    await marker_in(0)
    got = await step((m[0], True))
    for client in observers.values():
        assert got[client] == ([(b, True)] if client in sees else []), got

    # a second device: nothing
    bob2 = await cluster.client(0, device="laptop")
    await bob2.login("bob", PASSWORD)
    await marker_in(1)
    assert all(seen == [] for seen in (await step((m[1], True))).values())

    # one device of two logs out: nothing
    await bob1.logout()
    await marker_in(2)
    assert all(seen == [] for seen in (await step((m[2], True))).values())

    # the last device logs out: offline once, after the grace (barrier: a marker going offline
    # after him)
    left = time.monotonic()
    await bob2.logout()
    await markers[0].logout()
    got = await step((m[0], False))
    for client in observers.values():
        assert got[client] == ([(b, False)] if client in sees else []), got
    assert came[(b, False)] - left >= OFFLINE_GRACE_S

    # back on one device (online once), then its connection closes and the session resumes on
    # the other gateway within the grace: no push at all
    bob3 = await cluster.client(0)
    await bob3.login("bob", PASSWORD)
    await marker_in(3)
    got = await step((m[3], True))
    for client in observers.values():
        assert got[client] == ([(b, True)] if client in sees else []), got
    token, here = bob3.token, bob3.endpoint
    await bob3.close(logout=False)
    gone = time.monotonic()
    await async_wait_until(
        lambda: _no_sessions(cluster, b), timeout=OFFLINE_GRACE_S, what="bob's session unbound"
    )
    other = next(i for i, e in enumerate(cluster.gateway_endpoints()) if e != here)
    bob4 = await cluster.client(other)
    await bob4.resume(token)
    assert time.monotonic() - gone < OFFLINE_GRACE_S, "the resume came after the grace"
    await markers[1].logout()
    assert all(seen == [] for seen in (await step((m[1], False))).values())

    # a second router joins and takes bob and some observers over: nobody is announced; the
    # barriers are markers owned by each router
    [first] = cluster.alive("router")
    online = [*ids.values(), b, m[2], m[3]]
    name = next(
        f"router-join{i}"
        for i in range(1000)
        if _splits(Ring([first, f"router-join{i}"]), f"router-join{i}", b, m[4], m[5])
    )
    [second] = cluster.start("router", SOIM_NODE_ID=name)
    await cluster.wait_alive([second])
    await async_wait_until(
        lambda: all_at_owner(cluster, online), timeout=10, what="everyone at the new owner"
    )
    await marker_in(4)
    await marker_in(5)
    assert all(seen == [] for seen in (await step((m[4], True), (m[5], True))).values())

    # the first router stops: the second takes everyone over, and announces no one
    router.stop()
    await async_wait_until(
        lambda: cluster.alive("router") == [name], timeout=10, what="the first router gone"
    )
    await async_wait_until(
        lambda: all_at_owner(cluster, [*online, m[4], m[5]]),
        timeout=10,
        what="everyone at the second router",
    )
    await marker_in(1)
    assert all(seen == [] for seen in (await step((m[1], True))).values())
    assert time.monotonic() - started < 45


GRACE_S = 10
"""SOIM_PRESENCE_GRACE_S of the ring-change test: time for a router to join within a grace."""


@pytest.mark.timeout(90)
def test_pending_offlines_outlive_a_ring_change_and_a_router_stop(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        extra = {"SOIM_PRESENCE_GRACE_S": str(GRACE_S)}
        db = f"sqlite:{tmp_path}/db"
        async with running_cluster(tmp_path, cluster_name, db, extra) as cluster:
            await cluster.start_all()
            await offline_at_a_router_stop(cluster, *await offline_after_a_ring_change(cluster))

    asyncio.run(main())


async def offline_after_a_ring_change(
    cluster: Cluster,
) -> tuple[NodeProcess, ClientSession, ClientSession]:
    """bob and dan log out, a router joins and takes both over within the grace, dan logs in
    again there: when the grace ends the first router announces bob offline (the new owner
    holds no session of his) and not dan; mark, who stays with the first router and logs out
    last, is the barrier."""
    alice = await cluster.client()
    a = (await alice.register("alice", PASSWORD)).user_id
    clients: dict[str, ClientSession] = {}
    ids: dict[str, int] = {}
    for name in ("bob", "dan", "mark"):
        clients[name] = await cluster.client()
        ids[name] = (await clients[name].register(name, PASSWORD)).user_id
        await clients[name].add_friend(a)
        await alice.add_friend(ids[name])
    b, d, m = ids["bob"], ids["dan"], ids["mark"]
    [first] = cluster.alive("router")
    joiner = next(
        f"router-join{i}"
        for i in range(1000)
        if _splits(Ring([first, f"router-join{i}"]), f"router-join{i}", b, m, d)
    )

    await clients["bob"].logout()
    await clients["dan"].logout()
    left = time.monotonic()
    [second] = cluster.start("router", SOIM_NODE_ID=joiner)
    await cluster.wait_alive([second])
    # the test proves something only if the first router's ring changes within the grace
    await async_wait_until(
        lambda: metric(cluster, first, 'soim_peers_alive{role="router"}') >= 1,
        timeout=max(0.1, GRACE_S - 2 - (time.monotonic() - left)),
        what="the first router sees the one that joined, within the grace",
    )
    dan = await cluster.client()
    await dan.login("dan", PASSWORD)
    await async_wait_until(
        lambda: _only_at(cluster, d, joiner), timeout=5, what="dan's session at the new router"
    )
    assert time.monotonic() - left < GRACE_S, "dan came back after the grace"
    await clients["mark"].logout()
    seen = await until(alice, (b, False), (m, False))
    # nothing else offline; online pushes may come: the new router saw dan come online, and
    # the registrations' announcements may have found alice a friend already
    assert all(online for _, online in seen), seen
    return second, alice, dan


async def offline_at_a_router_stop(
    cluster: Cluster, second: NodeProcess, alice: ClientSession, dan: ClientSession
) -> None:
    """dan (now the second router's) logs out and the second router stops within his grace:
    it announces him offline as it stops (its successor holds no session of his) — alice
    hears it though no router is left to end the grace."""
    d = (await dan.me()).user_id
    await dan.logout()
    await async_wait_until(
        lambda: _only_at(cluster, d, second.node_id, 0), timeout=5, what="dan's session unbound"
    )
    second.stop()
    seen = await until(alice, (d, False))
    assert all(online for _, online in seen), seen


async def _only_at(cluster: Cluster, user_id: int, router: str, n: int = 1) -> bool:
    """Does `router` hold `n` sessions of `user_id`, and no other router any?"""
    return await sessions_at(cluster, user_id) == ({router: n} if n else {})


def _splits(ring: Ring, joined: str, bob: int, stays: int, moves: int) -> bool:
    """Does the ring give bob and `moves` to the router that joined, and `stays` not?"""
    return ring.owner(bob) == joined == ring.owner(moves) and ring.owner(stays) != joined


async def _no_sessions(cluster: Cluster, user_id: int) -> bool:
    return not await sessions_at(cluster, user_id)
