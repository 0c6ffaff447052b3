"""Fuzz of the client plane: 100,000+ random and mutated frames at a real gateway — from
unauthenticated Curve connections and from logged-in ones — while legitimate users chat.

Every node must still run, no node may log a traceback, the gateway's RSS must stay within
RSS_SLACK_BYTES of its baseline, and the chatting users must lose nothing. The run is seeded:
the seed is printed, and SOIM_FUZZ_SEED=<seed> replays it.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from fabric import envelope, timing
from schema import client_pb2
from schema import common_pb2 as pb
from schema.contracts.client import CLIENT
from tests.harness import Cluster, running_cluster
from tests.processes import NodeProcess
from tests.security.chatter import Chatter
from tests.security.fuzzer import (
    Blaster,
    FrameFactory,
    NodeWatch,
    assert_nodes_healthy,
    seed_from_env,
)

ANONYMOUS_FRAMES = 60_000
LOGGED_IN_FRAMES = 40_000
ANONYMOUS_CONNECTIONS = 8
LOGGED_IN_CONNECTIONS = 4
RSS_SLACK_BYTES = 50 * 1024 * 1024
LOGIN_TIMEOUT_S = 10.0
PASSWORD = "fuzz password 1"
SESSION_METHODS = frozenset({"Register", "Login", "Resume", "Logout"})
"""Left out of the logged-in phase (the anonymous one has them): they would end its session."""


def curve_client(server_key: bytes) -> Callable[[zmq.Socket], None]:
    """Socket setup of a `soim`-like client: a fresh Curve keypair, the gateway's server key."""

    def setup(sock: zmq.Socket) -> None:
        public, secret = zmq.curve_keypair()
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = server_key

    return setup


class RawLogin:
    """Logs a bare DEALER in as fuzz user i (Register the first time, Login afterwards)."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.user_ids: dict[int, int] = {}
        self.request_id = 1 << 40

    def __call__(self, sock: zmq.Socket, i: int) -> None:
        account = f"fz{self.tag}{i}"
        deadline = time.monotonic() + LOGIN_TIMEOUT_S
        while True:
            if i in self.user_ids:
                method, req = (
                    CLIENT["Login"],
                    client_pb2.LoginRequest(account=account, password=PASSWORD, device="fuzz"),
                )
            else:
                method, req = (
                    CLIENT["Register"],
                    client_pb2.RegisterRequest(account=account, password=PASSWORD, device="fuzz"),
                )
            header, payload = self._call(sock, method.name, req.SerializeToString(), deadline)
            if header.error == pb.OK:
                self.user_ids[i] = client_pb2.LoginReply.FromString(payload).user_id
                return
            assert header.error == pb.RATE_LIMITED and time.monotonic() < deadline, (
                f"fuzz user {account}: {pb.ErrorCode.Name(header.error)} {header.detail}"
            )
            sock.poll(200)  # backoff before another try; replies to nothing arrive meanwhile

    def _call(
        self, sock: zmq.Socket, method: str, payload: bytes, deadline: float
    ) -> tuple[pb.Header, bytes]:
        self.request_id += 1
        rid = self.request_id
        sock.send_multipart(
            envelope.request(method, rid, int(time.time() * 1000) + 10_000, payload)
        )
        while sock.poll(max(int((deadline - time.monotonic()) * 1000), 1)):
            header, body = envelope.decode_frame(sock.recv_multipart()[-1], 1 << 24)
            if header.request_id == rid:
                return header, body
        raise AssertionError(f"no reply to {method} within {LOGIN_TIMEOUT_S}s")


def fuzz_gateway(
    endpoint: str, server_key: bytes, ids: list[int], seed: int, watch: NodeWatch
) -> dict[str, object]:
    """Send the frames (in a thread of its own: sync sockets); return the figures."""
    rng = random.Random(seed)
    methods = list(CLIENT.values())
    ctx = zmq.Context()
    try:
        began = time.monotonic()
        anonymous = Blaster(ctx, endpoint, curve_client(server_key), ANONYMOUS_CONNECTIONS)
        factory = FrameFactory(rng, methods, ids, timing.MAX_FRAME_BYTES)
        for n in range(ANONYMOUS_FRAMES):
            anonymous.send(factory.message(), n)
            if n % 2000 == 0:
                watch.sample()
        anonymous.close()
        login = RawLogin()
        logged_in = Blaster(
            ctx, endpoint, curve_client(server_key), LOGGED_IN_CONNECTIONS, on_open=login
        )
        # no oversized frames here: a connection dropped for one would end its session
        in_session = [m for name, m in CLIENT.items() if name not in SESSION_METHODS]
        factory_in = FrameFactory(
            rng,
            in_session,
            ids + list(login.user_ids.values()),
            timing.MAX_FRAME_BYTES,
            oversized=False,
        )
        for n in range(LOGGED_IN_FRAMES):
            logged_in.send(factory_in.message(), n)
            if n % 2000 == 0:
                watch.sample()
        logged_in.close()
        return {
            "seconds": round(time.monotonic() - began, 1),
            "sent": anonymous.sent + logged_in.sent,
            "answered": sum(anonymous.replies.values()) + sum(logged_in.replies.values()),
            "replaced_connections": anonymous.replaced + logged_in.replaced,
            "replies_anonymous": dict(anonymous.replies.most_common()),
            "replies_logged_in": dict(logged_in.replies.most_common()),
            "kinds": dict(factory.kinds + factory_in.kinds),
        }
    finally:
        ctx.destroy(linger=0)


def gateway_process(cluster: Cluster, index: int) -> NodeProcess:
    """The process of the `index`-th live gateway (the order of `cluster.gateways()`)."""
    assert cluster.view is not None
    node_id = cluster.view.membership.alive("gateway")[index].node_id
    return next(n for n in cluster.nodes if n.node_id == node_id)


@pytest.mark.timeout(150)
def test_100k_hostile_frames_from_strangers_and_a_logged_in_user_break_no_gateway(
    tmp_path: Path, cluster_name: str
) -> None:
    seed = seed_from_env()
    print(f"fuzz seed {seed} (replay with SOIM_FUZZ_SEED={seed})")

    async def main() -> None:
        db = f"sqlite:{tmp_path / 'data'}"
        async with running_cluster(tmp_path, cluster_name, db) as cluster:
            await cluster.start_all(gateways=2)
            endpoint, server_key = cluster.gateways()[0]
            watch = NodeWatch(gateway_process(cluster, 0).pid)
            async with Chatter(cluster, users=3, group=True, min_acked=20) as chat:
                ids = [u.user_id for u in chat.users] + [*chat.pair_conv.values(), chat.group_id]
                figures = await asyncio.to_thread(
                    fuzz_gateway, endpoint, server_key, ids, seed, watch
                )
                print(f"fuzz: {figures}")
                assert figures["sent"] >= ANONYMOUS_FRAMES + LOGGED_IN_FRAMES
                assert figures["answered"] >= figures["sent"] // 10, "the frames went nowhere"
            print(f"chat: {chat.summary()}")
            assert_nodes_healthy(cluster.nodes)
            after = watch.sample()
            print(
                f"gateway RSS: baseline {watch.baseline >> 20} MiB, peak {watch.peak >> 20} "
                f"MiB, after {after >> 20} MiB"
            )
            assert after - watch.baseline < RSS_SLACK_BYTES

    asyncio.run(main())
