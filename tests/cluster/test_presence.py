"""Presence under ring changes and load, through real processes: a router joining or dying
re-binds every online user at its owner; 500 concurrent logins all get in (the directory sheds
what its password-hash queue cannot hold with RATE_LIMITED, and those are tried again); one
client's garbage frames get error codes and disturb no one else."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from fabric import envelope
from fabric.methods import RpcError
from fabric.ring import Ring
from fabric.security import anonymous_client
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.client import CLIENT
from schema.contracts.router import ROUTER
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until
from tools.local_cluster import LOAD_TEST_LIMITS
from tui.session import ClientSession, EventKind

PASSWORD = "correct horse"


async def bound_where(cluster: Cluster, user_ids: list[int]) -> dict[int, set[str]]:
    """user → the routers holding at least one session of the user."""
    assert cluster.view is not None
    where: dict[int, set[str]] = {u: set() for u in user_ids}
    for router in cluster.alive("router"):
        reply = await cluster.view.peers.get(router).call(
            ROUTER["Lookup"], cluster_pb2.UserIds(user_ids=user_ids), timeout=3
        )
        for entry in reply.users:
            if entry.sessions:
                where[entry.user_id].add(router)
    return where


async def all_at_owner(cluster: Cluster, user_ids: list[int]) -> bool:
    ring = Ring(cluster.alive("router"))
    where = await bound_where(cluster, user_ids)
    return all(where[u] == {ring.owner(u)} for u in user_ids)


@pytest.mark.timeout(120)
def test_router_join_and_death_rebind_everyone(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            nodes = (
                cluster.start("directory")
                + cluster.start("router", 2)
                + cluster.start("gateway", 2)
            )
            await cluster.wait_alive(nodes)
            clients: list[ClientSession] = []
            for i in range(40):
                client = await cluster.client(i % 2)
                await client.register(f"user{i:02d}", PASSWORD)
                clients.append(client)
            ids = [c.user.user_id for c in clients if c.user]
            await async_wait_until(
                lambda: all_at_owner(cluster, ids), timeout=5, what="everyone bound at the owner"
            )

            [third] = cluster.start("router")
            await cluster.wait_alive([third])
            joined = time.monotonic()
            await async_wait_until(
                lambda: all_at_owner(cluster, ids),
                timeout=5,
                what="everyone at the owner after a join",
            )
            assert time.monotonic() - joined < 3.0
            moved = [
                c
                for c in clients
                if c.user and Ring(cluster.alive("router")).owner(c.user.user_id) == third.node_id
            ]
            assert moved, "the new router owns some users"
            for client in moved:
                await next_sync_hint(client)

            victim = next(n for n in nodes if n.role == "router")
            victim.kill()
            killed = time.monotonic()
            await async_wait_until(
                lambda: victim.node_id not in cluster.alive("router"),
                timeout=6,
                what="router death noticed",
            )
            await async_wait_until(
                lambda: all_at_owner(cluster, ids),
                timeout=5,
                what="everyone at the owner after a death",
            )
            assert time.monotonic() - killed < 5.0 + 1.0  # detection (≤4 s) + re-binding
            # gateways agree: each sees every user online
            for gateway in (0, 1):
                viewer = clients[gateway]
                page = await viewer.online_users(limit=200, everyone=True)
                assert {u.user_id for u in page.users} == set(ids)

    asyncio.run(main())


async def next_sync_hint(client: ClientSession) -> None:
    async with asyncio.timeout(5):
        while True:
            event = await client.events.get()
            if (
                event.kind is EventKind.PUSH
                and event.push is not None
                and event.push.WhichOneof("item") == "sync_hint"
            ):
                return


@pytest.mark.timeout(180)
def test_500_concurrent_logins_and_garbage_from_one_client(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        async with running_cluster(
            tmp_path, cluster_name, f"sqlite:{tmp_path}/db", LOAD_TEST_LIMITS
        ) as cluster:
            nodes = (
                cluster.start("directory")
                + cluster.start("router", 2)
                + cluster.start("gateway", 2)
            )
            await cluster.wait_alive(nodes)
            clients = [await cluster.client(i % 2) for i in range(500)]
            await asyncio.gather(
                *(
                    until_admitted(c.register, f"load{i:03d}", PASSWORD)
                    for i, c in enumerate(clients)
                )
            )
            for client in clients:
                await client.logout()
            replies = await asyncio.gather(
                *(until_admitted(c.login, f"load{i:03d}", PASSWORD) for i, c in enumerate(clients)),
                return_exceptions=True,
            )
            failures = [r for r in replies if isinstance(r, BaseException)]
            assert not failures, f"{len(failures)} logins failed: {failures[:3]}"
            assert len({r.user_id for r in replies}) == 500  # type: ignore[union-attr]

            endpoint, key = cluster.gateways()[0]
            await garbage_gets_error_codes(endpoint, key)
            mes = await asyncio.gather(*(c.me() for c in clients[:50]))
            assert [m.account for m in mes] == [f"load{i:03d}" for i in range(50)]

    asyncio.run(main())


async def until_admitted(
    step: Callable[[str, str], Awaitable[client_pb2.LoginReply]], account: str, password: str
) -> client_pb2.LoginReply:
    """`step(account, password)`, again after a pause while the cluster answers RATE_LIMITED
    (nothing was done: its password-hash queue was full)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await step(account, password)
        except RpcError as err:
            if err.code != pb.RATE_LIMITED or time.monotonic() > deadline:
                raise
        await asyncio.sleep(random.uniform(0.05, 0.3))  # a client's jittered retry pause


async def garbage_gets_error_codes(endpoint: str, key: bytes) -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    anonymous_client(sock, key)
    sock.connect(endpoint)
    me = pb.Header(
        kind=pb.REQUEST, request_id=7, method=CLIENT["Me"].name, deadline_ms=2**62
    ).SerializeToString()
    nope = pb.Header(
        kind=pb.REQUEST, request_id=8, method="client.Nope", deadline_ms=2**62
    ).SerializeToString()
    cases = [
        ([b"garbage"], pb.BAD_FRAME),
        ([b"two", b"frames"], pb.BAD_FRAME),
        ([envelope.MAGIC + b"\x00\x02\xff\xff"], pb.BAD_FRAME),
        # just over SOIM_MAX_FRAME_BYTES: answered; far over it, libzmq drops the connection
        # (ZMQ_MAXMSGSIZE) before buffering it — tests/security/test_gateway_limits.py
        ([envelope.frame(me, b"x" * 65_600)], pb.TOO_LARGE),
        ([envelope.frame(me, client_pb2.MeRequest().SerializeToString())], pb.UNAUTHENTICATED),
        ([envelope.frame(nope, b"")], pb.UNKNOWN_METHOD),
    ]
    try:
        for frames, code in cases:
            await sock.send_multipart(frames)
            async with asyncio.timeout(5):
                reply = envelope.decode(await sock.recv_multipart(), 1 << 20)
            assert reply.header.error == code, (frames[0][:20], reply.header)
    finally:
        sock.close(0)
        ctx.destroy(0)
