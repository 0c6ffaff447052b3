"""Curve + ZAP on real sockets over 127.0.0.1: who gets through to a ROUTER and who does not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from fabric import keys
from fabric.security import Security, anonymous_client

HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
SILENCE_MS = 1000


@asynccontextmanager
async def started(keys_dir: Path) -> AsyncIterator[tuple[zmq.asyncio.Context, Security]]:
    """A context with Security running; both closed on exit."""
    ctx = zmq.asyncio.Context()
    sec = Security(ctx, keys_dir)
    try:
        sec.start()
        yield ctx, sec
    finally:
        sec.stop()
        ctx.destroy(linger=0)


def server(
    ctx: zmq.asyncio.Context, setup: Callable[[zmq.Socket], None]
) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket, str]:
    """A ROUTER made secure by `setup`, its handshake monitor, and its endpoint."""
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    setup(router)
    monitor = router.get_monitor_socket(HANDSHAKE_EVENTS)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    return router, monitor, f"tcp://127.0.0.1:{port}"


def client(
    ctx: zmq.asyncio.Context, endpoint: str, setup: Callable[[zmq.Socket], None]
) -> zmq.asyncio.Socket:
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    setup(dealer)
    dealer.connect(endpoint)
    return dealer


async def handshake(monitor: zmq.asyncio.Socket, timeout: float = 5.0) -> int:
    """The first handshake event the server reports, waited for with a deadline."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if await monitor.poll(int(left * 1000)):
            event = parse_monitor_message(await monitor.recv_multipart())["event"]
            if event & HANDSHAKE_EVENTS:
                return int(event)
    raise AssertionError(f"no handshake event within {timeout}s")


async def refused(
    router: zmq.asyncio.Socket,
    monitor: zmq.asyncio.Socket,
    dealer: zmq.asyncio.Socket,
    expected_event: int,
) -> None:
    """The server reports the failed handshake and nothing crosses in either direction."""
    await dealer.send(b"let me in")
    assert await handshake(monitor) == expected_event
    assert await router.poll(SILENCE_MS) == 0
    assert await dealer.poll(0) == 0


def foreign_keypair(tmp_path: Path, server_public: bytes) -> Callable[[zmq.Socket], None]:
    """Setup for a Curve client holding another cluster's keys."""
    keys.generate(tmp_path / "other")
    other = keys.load_node(tmp_path / "other")

    def setup(sock: zmq.Socket) -> None:
        sock.curve_secretkey = other.secret
        sock.curve_publickey = other.public
        sock.curve_serverkey = server_public

    return setup


def test_cluster_keys_are_admitted_and_answered(keys_dir: Path) -> None:
    async def scenario() -> None:
        async with started(keys_dir) as (ctx, sec):
            router, monitor, endpoint = server(ctx, sec.cluster_server)
            dealer = client(ctx, endpoint, lambda s: sec.cluster_client(s, sec.node.public))
            await dealer.send(b"ping")
            assert await handshake(monitor) == zmq.EVENT_HANDSHAKE_SUCCEEDED
            assert await router.poll(5000)
            identity, body = await router.recv_multipart()
            assert body == b"ping"
            await router.send_multipart([identity, b"pong"])
            assert await dealer.poll(5000)
            assert await dealer.recv() == b"pong"

    asyncio.run(scenario())


def test_other_clusters_keypair_is_refused(keys_dir: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(keys_dir) as (ctx, sec):
            router, monitor, endpoint = server(ctx, sec.cluster_server)
            dealer = client(ctx, endpoint, foreign_keypair(tmp_path, sec.node.public))
            await refused(router, monitor, dealer, zmq.EVENT_HANDSHAKE_FAILED_AUTH)

    asyncio.run(scenario())


def test_plain_text_peer_gets_nothing(keys_dir: Path) -> None:
    async def scenario() -> None:
        async with started(keys_dir) as (ctx, sec):
            router, monitor, endpoint = server(ctx, sec.cluster_server)
            dealer = client(ctx, endpoint, lambda s: None)
            await refused(router, monitor, dealer, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)

    asyncio.run(scenario())


def test_anonymous_client_reaches_the_client_plane_only(keys_dir: Path) -> None:
    async def scenario() -> None:
        async with started(keys_dir) as (ctx, sec):
            gateway, g_monitor, g_endpoint = server(ctx, sec.client_server)
            gateway_public = keys.load_client_plane_public(keys_dir)
            soim = client(ctx, g_endpoint, lambda s: anonymous_client(s, gateway_public))
            await soim.send(b"login")
            assert await handshake(g_monitor) == zmq.EVENT_HANDSHAKE_SUCCEEDED
            assert await gateway.poll(5000)
            assert (await gateway.recv_multipart())[1] == b"login"
            # Admitting any client on the client plane must not open the cluster plane.
            router, monitor, endpoint = server(ctx, sec.cluster_server)
            intruder = client(ctx, endpoint, lambda s: anonymous_client(s, sec.node.public))
            await refused(router, monitor, intruder, zmq.EVENT_HANDSHAKE_FAILED_AUTH)

    asyncio.run(scenario())


def test_a_client_with_the_wrong_server_key_gets_nothing(keys_dir: Path) -> None:
    async def scenario() -> None:
        async with started(keys_dir) as (ctx, sec):
            gateway, monitor, endpoint = server(ctx, sec.client_server)
            soim = client(ctx, endpoint, lambda s: anonymous_client(s, sec.node.public))
            await refused(gateway, monitor, soim, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)

    asyncio.run(scenario())


def test_server_sockets_need_a_running_authenticator(keys_dir: Path) -> None:
    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        try:
            sec = Security(ctx, keys_dir)
            sock = ctx.socket(zmq.ROUTER)
            with pytest.raises(RuntimeError):
                sec.cluster_server(sock)
            sock.close(linger=0)
            sec.start()
            router, _monitor, endpoint = server(ctx, sec.cluster_server)
            sec.stop()  # enforced ZAP domain: no authenticator means nobody gets in
            dealer = client(ctx, endpoint, lambda s: sec.cluster_client(s, sec.node.public))
            # the handshake fails (or, while the handler is going away, never completes):
            # either way nothing crosses in either direction
            await dealer.send(b"let me in")
            assert await router.poll(2 * SILENCE_MS) == 0
            assert await dealer.poll(0) == 0
        finally:
            ctx.destroy(linger=0)

    asyncio.run(scenario())


def test_missing_authorized_keys_fail_at_start(keys_dir: Path) -> None:
    (keys_dir / "authorized" / "node.key").unlink()

    async def scenario() -> None:
        ctx = zmq.asyncio.Context()
        try:
            with pytest.raises(keys.KeysMissing, match="authorized/ holds no public key"):
                Security(ctx, keys_dir).start()
        finally:
            ctx.destroy(linger=0)

    asyncio.run(scenario())
