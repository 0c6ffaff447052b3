"""Router nodes as real processes: bind/unbind/lookup over several devices, NOT_OWNER by ring,
full snapshots, garbage refused per binding, OnlineUsers pages, Deliver fan-out per gateway
topic (ordered, `except` skipped, split at the frame limit), a dead gateway's sessions dropped,
and a third router taking exactly its range; plus the pure presence table and fan-out in
process (edge cases that are slow to reach through processes).

The test joins each cluster as an observer (`tools.cluster_view.ClusterView`): it calls the
routers over RPC and receives GatewayDelivery events on the view's SUB, which follows every
discovered node's events PUB.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest

from fabric import envelope
from fabric.config import Config
from fabric.methods import STATUS, Method, RpcError
from fabric.ring import Ring
from nodes.router.delivery import fan_out
from nodes.router.presence import Binding, Presence
from schema import client_pb2, cluster_pb2, fabric_pb2
from schema import common_pb2 as pb
from schema.contracts.router import DELIVERY_METHOD, ROUTER, delivery_topic
from tests.processes import NodeProcess, node_processes
from tests.support import async_wait_until
from tools.cluster_view import ClusterView

OK, NOT_OWNER, INVALID = pb.OK, pb.NOT_OWNER, pb.INVALID_ARGUMENT


# ---- helpers
def binding(
    user_id: int, gateway_id: str, session_id: bytes, device: str = "tui"
) -> cluster_pb2.SessionBinding:
    return cluster_pb2.SessionBinding(
        user_id=user_id, gateway_id=gateway_id, session_id=session_id, device=device
    )


async def call(view: ClusterView, node_id: str, method: Method, request: object) -> object:
    return await view.peers.get(node_id).call(method, request, timeout=3)


async def bind(
    view: ClusterView, node_id: str, bindings: Iterable[cluster_pb2.SessionBinding], **kw: object
) -> list[int]:
    reply = await call(
        view,
        node_id,
        ROUTER["BindSessions"],
        cluster_pb2.BindRequest(bindings=list(bindings), **kw),
    )
    return list(reply.results)


async def lookup(
    view: ClusterView, node_id: str, user_ids: list[int]
) -> dict[int, set[tuple[str, bytes, str]]]:
    reply = await call(view, node_id, ROUTER["Lookup"], cluster_pb2.UserIds(user_ids=user_ids))
    assert [u.user_id for u in reply.users] == user_ids
    return {
        u.user_id: {(s.gateway_id, s.session_id, s.device) for s in u.sessions} for u in reply.users
    }


async def online(view: ClusterView, node_id: str, limit: int = 0) -> list[int]:
    """Every user id the router holds, page by page."""
    users: list[int] = []
    cursor = 0
    while True:
        page = await call(
            view,
            node_id,
            ROUTER["OnlineUsers"],
            client_pb2.OnlineUsersRequest(cursor=cursor, limit=limit),
        )
        assert list(page.user_ids) == sorted(page.user_ids)
        assert all(u > cursor for u in page.user_ids)
        users += page.user_ids
        if not page.more:
            return users
        assert page.user_ids, "more=True with an empty page"
        cursor = page.user_ids[-1]


async def routers_see_each_other(view: ClusterView, ids: list[str], timeout: float = 20) -> None:
    """Every router in `ids` is alive in the view and sees every other one."""

    async def ready() -> bool:
        if not set(ids) <= {p.node_id for p in view.membership.alive()}:
            return False
        for node_id in ids:
            status = await call(view, node_id, STATUS, fabric_pb2.StatusRequest())
            if not set(ids) - {node_id} <= set(status.peers_alive):
                return False
        return True

    await async_wait_until(ready, timeout=timeout, what=f"routers {ids} see each other")


def start_routers(
    n: int, env: dict[str, str], log_dir: Path, nodes: list[NodeProcess]
) -> list[str]:
    started = [NodeProcess("router", env, log_dir) for _ in range(n)]
    nodes += started
    return [r.node_id for r in started]


def logs_on_failure(nodes: list[NodeProcess]) -> str:
    return "\n".join(f"--- {n.node_id}\n{n.log()[-3000:]}" for n in nodes)


class Deliveries:
    """GatewayDelivery events heard on the view's SUB, by topic."""

    def __init__(self, view: ClusterView, gateway_ids: Iterable[str]) -> None:
        self.got: dict[bytes, list[cluster_pb2.GatewayDelivery]] = {}
        for gateway_id in gateway_ids:
            view.subscriber.on(delivery_topic(gateway_id), self._heard)

    def _heard(self, topic: bytes, env: envelope.Envelope) -> None:
        assert env.header.method == DELIVERY_METHOD
        self.got.setdefault(topic, []).append(
            envelope.parse_payload(cluster_pb2.GatewayDelivery, env.payload)
        )

    def pushes(self, gateway_id: str) -> list[tuple[bytes, list[bytes]]]:
        return [
            (item.push, list(item.session_ids))
            for event in self.got.get(delivery_topic(gateway_id), [])
            for item in event.items
        ]

    def clear(self) -> None:
        self.got.clear()


def deliver_batch(
    *deliveries: tuple[list[int], bytes, tuple[str, bytes] | None],
) -> cluster_pb2.DeliverBatch:
    batch = cluster_pb2.DeliverBatch()
    for user_ids, push, skip in deliveries:
        d = batch.deliveries.add(user_ids=user_ids, push=push)
        if skip is not None:
            getattr(d, "except").gateway_id, getattr(d, "except").session_id = skip
    return batch


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


# ---- tests
@pytest.mark.timeout(60)
def test_bind_unbind_lookup_ownership_and_garbage(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    async def main(nodes: list[NodeProcess]) -> None:
        async with ClusterView(Config.from_env(cluster_env, role="test")) as view:
            r1, r2 = start_routers(2, cluster_env, tmp_path, nodes)
            await routers_see_each_other(view, [r1, r2])
            ring = Ring([r1, r2])
            users = list(range(1, 41))
            mine = {r: [u for u in users if ring.owner(u) == r] for r in (r1, r2)}
            assert mine[r1] and mine[r2]

            # each router answers OK for its own users and NOT_OWNER for the other's
            for r in (r1, r2):
                results = await bind(view, r, [binding(u, "gw-a", b"s%d" % u) for u in users])
                assert results == [OK if ring.owner(u) == r else NOT_OWNER for u in users]
                assert sorted(await online(view, r)) == mine[r]

            # one user, three devices on two gateways
            u = mine[r1][0]
            devices = {
                ("gw-a", b"s%d" % u, "tui"),
                ("gw-a", b"phone", "phone"),
                ("gw-b", b"laptop", "laptop"),
            }
            assert await bind(view, r1, [binding(u, g, s, d) for g, s, d in devices]) == [OK] * 3
            assert (await lookup(view, r1, [u, 999_999]))[u] == devices
            assert (await lookup(view, r1, [999_999]))[999_999] == set()
            # unbind one device; a stale unbind naming another user leaves a binding alone
            await call(
                view,
                r1,
                ROUTER["UnbindSessions"],
                cluster_pb2.UnbindRequest(
                    sessions=[
                        cluster_pb2.SessionRef(user_id=u, gateway_id="gw-a", session_id=b"phone"),
                        cluster_pb2.SessionRef(
                            user_id=u + 1, gateway_id="gw-b", session_id=b"laptop"
                        ),
                    ]
                ),
            )
            assert (await lookup(view, r1, [u]))[u] == devices - {("gw-a", b"phone", "phone")}

            # a full snapshot of gw-a replaces what r1 holds for gw-a, and only that
            keep, new = mine[r1][1], mine[r1][2]
            other = mine[r2][0]
            results = await bind(
                view,
                r1,
                [
                    binding(keep, "gw-a", b"s%d" % keep),
                    binding(new, "gw-a", b"fresh", "web"),
                    binding(other, "gw-a", b"s%d" % other),
                ],
                full_snapshot=True,
                gateway_id="gw-a",
            )
            assert results == [OK, OK, NOT_OWNER]
            assert sorted(await online(view, r1)) == sorted({u, keep, new})
            got = await lookup(view, r1, [u, keep, new])
            assert got == {
                u: {("gw-b", b"laptop", "laptop")},
                keep: {("gw-a", b"s%d" % keep, "tui")},
                new: {("gw-a", b"fresh", "web")},
            }  # s<new> was not in it

            # the load figure in heartbeats and the sessions gauge count bound sessions
            await async_wait_until(
                lambda: view.membership.get(r1).load == 3,
                timeout=3,
                what="heartbeat load = 3 sessions",
            )
            port = view.membership.get(r1).info.metrics_port
            assert await asyncio.to_thread(metric, port, "soim_router_sessions") == 3

            # garbage bindings get INVALID_ARGUMENT one by one; good ones in the same call pass
            good = mine[r2][1]
            results = await bind(
                view,
                r2,
                [
                    binding(0, "gw-a", b"x"),
                    binding(good, "", b"x"),
                    binding(good, "gw-a", b""),
                    binding(good, "gw a!", b"x"),
                    binding(good, "gw-a", b"x" * 256),
                    binding(good, "gw-a", b"x", "d" * 33),
                    binding(good, "gw-c", b"ok"),
                ],
            )
            assert results == [INVALID] * 6 + [OK]
            with pytest.raises(RpcError) as err:  # a snapshot of no gateway
                await bind(view, r2, [binding(good, "gw-a", b"x")], full_snapshot=True)
            assert err.value.code == INVALID
            # a snapshot of gw-a whose only binding is not on gw-a: gw-a has no valid session
            results = await bind(
                view, r2, [binding(good, "gw-b", b"x")], full_snapshot=True, gateway_id="gw-a"
            )
            assert results == [INVALID]
            with pytest.raises(RpcError) as err:  # too many ids in one lookup
                await lookup(view, r2, list(range(1, 1002)))
            assert err.value.code == INVALID
            # a payload that is not a BindRequest at all
            bogus = Method(
                ROUTER["BindSessions"].name, fabric_pb2.EchoRequest, cluster_pb2.BindReply
            )
            with pytest.raises(RpcError) as err:
                await call(view, r2, bogus, fabric_pb2.EchoRequest(data=b"\xff\xff\xff"))
            assert err.value.code == pb.BAD_REQUEST
            # ... and the router keeps serving
            assert (await lookup(view, r2, [good]))[good] == {("gw-c", b"ok", "tui")}
            assert await online(view, r2) == [good]

    with node_processes(cluster_env, tmp_path) as nodes:
        try:
            asyncio.run(main(nodes))
        except BaseException:
            print(logs_on_failure(nodes))
            raise


@pytest.mark.timeout(60)
def test_online_pages_deliver_and_gateway_death(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    async def main(nodes: list[NodeProcess]) -> None:
        async with ClusterView(Config.from_env(cluster_env, role="test")) as view:
            (r,) = start_routers(1, cluster_env, tmp_path, nodes)
            gateway = NodeProcess("gateway", {**cluster_env, "SOIM_GATEWAY_PORT": "0"}, tmp_path)
            nodes.append(gateway)
            await routers_see_each_other(view, [r])

            # OnlineUsers: 237 users (some with two sessions), every one exactly once
            users = list(range(1000, 1000 + 237 * 7, 7))
            assert await bind(view, r, [binding(u, "gw-1", b"s%d" % u) for u in users]) == [
                OK
            ] * len(users)
            assert await bind(view, r, [binding(u, "gw-10", b"t%d" % u) for u in users[::3]]) == [
                OK
            ] * len(users[::3])
            for limit in (0, 1, 10, 100, 5000):
                assert await online(view, r, limit) == users
            first = await call(
                view, r, ROUTER["OnlineUsers"], client_pb2.OnlineUsersRequest(cursor=users[-1])
            )
            assert list(first.user_ids) == [] and not first.more

            # Deliver: subscribe, then wait until a probe gets through (no slow-joiner loss)
            # (subscriptions reach the router in order: once the last one works, all do)
            heard = Deliveries(view, ["gw-1", "gw-10", "gw-big", "gw-probe"])
            assert await bind(view, r, [binding(3, "gw-probe", b"p")]) == [OK]
            probe = deliver_batch(([3], b"probe", None))

            async def probe_heard() -> bool:
                await call(view, r, ROUTER["Deliver"], probe)
                return bool(heard.pushes("gw-probe"))

            await async_wait_until(probe_heard, timeout=5, what="deliveries reach the SUB")

            a, b, c = users[0], users[3], users[1]  # a and b have a gw-10 session too
            batch = deliver_batch(
                ([a, b], b"m1", ("gw-1", b"s%d" % a)),  # a sent it on gw-1
                ([c, a, c], b"m2", None),
                ([999], b"nobody", None),
                ([b], b"m3", ("gw-10", b"t%d" % b)),
            )
            reply = await call(view, r, ROUTER["Deliver"], batch)
            assert reply.sessions == 3 + 3 + 0 + 1
            await async_wait_until(
                lambda: len(heard.pushes("gw-1")) == 3 and len(heard.pushes("gw-10")) == 2,
                timeout=3,
                what="one batch's deliveries",
            )
            # one event per gateway for the batch, pushes in batch order
            assert [len(e.items) for e in heard.got[delivery_topic("gw-1")]] == [3]
            assert [len(e.items) for e in heard.got[delivery_topic("gw-10")]] == [2]
            assert heard.got[delivery_topic("gw-1")][0].router_id == r
            assert [(p, sorted(s)) for p, s in heard.pushes("gw-1")] == [
                (b"m1", [b"s%d" % b]),
                (b"m2", sorted([b"s%d" % c, b"s%d" % a])),
                (b"m3", [b"s%d" % b]),
            ]
            # gw-10's topic is not a prefix match of gw-1's: each got its own pushes only
            assert heard.pushes("gw-10") == [
                (b"m1", [b"t%d" % a, b"t%d" % b]),
                (b"m2", [b"t%d" % a]),
            ]

            # a push to more sessions than one frame holds is split over events, in order
            big_user = 5
            sids = [b"big-%05d-%s" % (i, b"x" * 20) for i in range(2200)]
            for start in range(0, len(sids), 500):
                assert await bind(
                    view, r, [binding(big_user, "gw-big", s) for s in sids[start : start + 500]]
                ) == [OK] * len(sids[start : start + 500])
            heard.clear()
            reply = await call(
                view,
                r,
                ROUTER["Deliver"],
                deliver_batch(([big_user], b"m-big", None), ([big_user], b"m-after", None)),
            )
            assert reply.sessions == 2 * len(sids)
            await async_wait_until(
                lambda: sum(len(s) for _, s in heard.pushes("gw-big")) == 2 * len(sids),
                timeout=3,
                what="the big delivery",
            )
            assert len(heard.got[delivery_topic("gw-big")]) >= 2
            pushes = heard.pushes("gw-big")
            assert [p for p, _ in pushes] == sorted(
                (p for p, _ in pushes), key=lambda p: p == b"m-after"
            )
            for name in (b"m-big", b"m-after"):
                assert sorted(s for p, ss in pushes if p == name for s in ss) == sorted(sids)

            # a gateway that dies takes its sessions with it; the others stay
            await async_wait_until(
                lambda: view.membership.get(gateway.node_id), timeout=15, what="gateway alive"
            )
            assert await bind(
                view, r, [binding(a, gateway.node_id, b"g1"), binding(77, gateway.node_id, b"g2")]
            ) == [OK, OK]
            assert (await lookup(view, r, [77]))[77] == {(gateway.node_id, b"g2", "tui")}
            gateway.kill()

            async def gateway_sessions_gone() -> bool:
                got = await lookup(view, r, [a, 77])
                return got[77] == set() and all(s[0] != gateway.node_id for s in got[a])

            await async_wait_until(
                gateway_sessions_gone, timeout=6, what="dead gateway's sessions dropped"
            )
            assert (await lookup(view, r, [a]))[a] == {
                ("gw-1", b"s%d" % a, "tui"),
                ("gw-10", b"t%d" % a, "tui"),
            }

    with node_processes(cluster_env, tmp_path) as nodes:
        try:
            asyncio.run(main(nodes))
        except BaseException:
            print(logs_on_failure(nodes))
            raise


@pytest.mark.timeout(60)
def test_third_router_takes_exactly_its_range(cluster_env: dict[str, str], tmp_path: Path) -> None:
    async def main(nodes: list[NodeProcess]) -> None:
        async with ClusterView(Config.from_env(cluster_env, role="test")) as view:
            r1, r2 = start_routers(2, cluster_env, tmp_path, nodes)
            await routers_see_each_other(view, [r1, r2])
            users = list(range(1, 301))
            before = Ring([r1, r2])
            for r in (r1, r2):
                owned = [u for u in users if before.owner(u) == r]
                assert await bind(view, r, [binding(u, "gw-a", b"s%d" % u) for u in owned]) == [
                    OK
                ] * len(owned)

            (r3,) = start_routers(1, cluster_env, tmp_path, nodes)
            await routers_see_each_other(view, [r1, r2, r3])
            after = Ring([r1, r2, r3])
            moved = [u for u in users if after.owner(u) == r3]
            assert moved, "the new router owns part of the range"
            # the old owners dropped exactly the users that moved; the newcomer holds nothing
            # until the gateways re-bind there
            for r in (r1, r2):
                expect = [u for u in users if before.owner(u) == r and after.owner(u) == r]
                await async_wait_until(
                    lambda r=r, e=expect: _online_is(view, r, e),
                    timeout=3,
                    what=f"{r} holds its range on the new ring",
                )
            assert await online(view, r3) == []
            # binding now follows the new ring everywhere
            for r in (r1, r2, r3):
                assert await bind(view, r, [binding(u, "gw-a", b"s%d" % u) for u in users]) == [
                    OK if after.owner(u) == r else NOT_OWNER for u in users
                ]
                assert await online(view, r) == [u for u in users if after.owner(u) == r]

            # the newcomer leaves: its users come back to their owners on the old ring
            nodes[-1].stop()
            for r in (r1, r2):
                await async_wait_until(
                    lambda r=r: _bind_ok(view, r, moved, before),
                    timeout=5,
                    what=f"{r} owns the old range again",
                )

    with node_processes(cluster_env, tmp_path) as nodes:
        try:
            asyncio.run(main(nodes))
        except BaseException:
            print(logs_on_failure(nodes))
            raise


async def _online_is(view: ClusterView, node_id: str, expect: list[int]) -> bool:
    return await online(view, node_id) == expect


async def _bind_ok(view: ClusterView, node_id: str, users: list[int], ring: Ring) -> bool:
    results = await bind(view, node_id, [binding(u, "gw-a", b"s%d" % u) for u in users])
    return results == [OK if ring.owner(u) == node_id else NOT_OWNER for u in users]


# ---- the pure parts, in process
@pytest.mark.timeout(10)
def test_presence_moves_replaces_and_retains() -> None:
    p = Presence()
    p.bind(1, "gw", b"a", "tui")
    p.bind(1, "gw", b"a", "phone")  # again: the device is updated, not a second one
    p.bind(2, "gw", b"b", "tui")
    assert p.session_count == 2
    p.bind(3, "gw", b"a", "web")  # the connection logged in as someone else
    assert p.bindings_of(1) == [] and p.bindings_of(3) == [Binding(3, "gw", b"a", "web")]
    assert not p.unbind(1, "gw", b"a")  # a stale unbind of the old user
    assert p.users_after(0, 10) == ([2, 3], False)
    p.bind(4, "other", b"a", "tui")
    assert (
        p.replace_gateway("gw", [Binding(2, "gw", b"b", "tui"), Binding(5, "gw", b"c", "tui")]) == 1
    )  # 3's went
    assert p.users_after(0, 2) == ([2, 4], True) and p.users_after(4, 2) == ([5], False)
    assert p.retain_users(lambda u: u != 5) == 1
    assert p.drop_gateway("gw") == 1 and p.drop_gateway("gw") == 0
    assert p.users_after(0, 10) == ([4], False) and p.session_count == p.user_count == 1


@pytest.mark.timeout(10)
def test_fan_out_splits_at_the_budget_and_drops_what_cannot_fit() -> None:
    p = Presence()
    sids = [b"%03d" % i for i in range(50)]
    for sid in sids:
        p.bind(1, "gw", sid, "tui")
    p.bind(2, "gw", b"x" * 200, "tui")  # a session id too long for the tiny budget
    batch = deliver_batch(([1], b"one", None), ([1, 2], b"two", None))
    out = fan_out(p, batch, "r", budget=120)
    assert len(out.events) > 2
    assert all(event.ByteSize() <= 120 for _, event in out.events)
    items = [
        (item.push, sid)
        for _, event in out.events
        for item in event.items
        for sid in item.session_ids
    ]
    assert items == [(b"one", s) for s in sids] + [(b"two", s) for s in sids]
    assert (out.sessions, out.too_large) == (100, 1)
    huge = fan_out(p, deliver_batch(([1], b"p" * 500, None)), "r", budget=120)
    assert (huge.events, huge.sessions, huge.too_large) == ([], 0, 50)
