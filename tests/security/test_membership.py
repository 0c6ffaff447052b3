"""Authenticated membership on a real cluster: discovery records are hints, never identities.

An attacker on the discovery network announces records of every role — new node ids, and the
ids of live nodes (hijacks) — pointing at a TCP port that counts who connects. Without the
cluster secret nobody dials them; with it (an insider's record) a record whose key is not
authorized is still never dialled, and one that copies a live node's public key cannot complete
the handshake, so nothing changes. A revoked node key is cut off within about a second, and a
second process claiming a live node id is refused. Legitimate users chat throughout and lose
nothing (`Chatter`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from fabric import keys, timing
from fabric.discovery import SERVICE_TYPE, NodeInfo, RecordError, record_key, signed_txt
from fabric.events import Publisher, Subscriber
from fabric.membership import HEARTBEAT_METHOD, HEARTBEAT_TOPIC, Membership
from fabric.methods import ECHO, STATUS, RpcError
from fabric.rpc_client import RpcClient
from fabric.security import Security
from schema import common_pb2 as pb
from schema import fabric_pb2
from tests.harness import Cluster, running_cluster
from tests.processes import NodeProcess
from tests.security.chatter import Chatter
from tests.support import async_wait_until


class Listener:
    """An attacker's TCP endpoint: accepts and counts connections, reads nothing."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def dead_endpoint() -> str:
    """An endpoint where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def record(cluster: str, node_id: str, role: str, endpoint: str, key: str) -> NodeInfo:
    eps = {
        "rpc": endpoint,
        "events": endpoint,
        **({"client": endpoint} if role == "gateway" else {}),
    }
    return NodeInfo(
        node_id=node_id,
        role=role,
        cluster=cluster,
        version="0.1.0",
        host="127.0.0.1",
        endpoints=eps,
        metrics_port=9,
        public_key=key,
        client_key=key if role == "gateway" else "",
        started_at=time.time(),
    )


class Announcer:
    """An attacker's mDNS responder: publishes TXT records under labels of its own."""

    def __init__(self) -> None:
        self.azc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        self.count = 0

    async def announce(self, info: NodeInfo, signing_key: bytes | None = None) -> None:
        txt = info.to_txt() if signing_key is None else signed_txt(info.to_txt(), signing_key)
        self.count += 1
        label = f"{info.cluster}-evil{self.count}"
        port = int(info.endpoints["rpc"].rsplit(":", 1)[1])
        await self.azc.async_register_service(
            AsyncServiceInfo(
                SERVICE_TYPE,
                f"{label}.{SERVICE_TYPE}",
                port=port,
                properties=txt,
                server=f"{label}.local.",
                addresses=[socket.inet_aton("127.0.0.1")],
            )
        )

    async def close(self) -> None:
        await self.azc.async_close()


def snapshot(cluster: Cluster) -> dict[str, tuple[str, dict[str, str]]]:
    """node id -> (public key, endpoints) of every live node, as the observer admitted them."""
    assert cluster.view is not None
    return {
        p.node_id: (p.info.public_key, dict(p.info.endpoints))
        for p in cluster.view.membership.alive()
    }


async def beats(cluster: Cluster, n: int) -> None:
    """Wait until the observer has heard `n` more heartbeats of every live node."""
    assert cluster.view is not None
    peers = cluster.view.membership.alive()
    start = {p.node_id: p.last_beat for p in peers}
    floor = time.monotonic() + (n - 1) * timing.HEARTBEAT_INTERVAL_S
    await async_wait_until(
        lambda: all(p.last_beat > max(start[p.node_id], floor) for p in peers),
        timeout=n + 5,
        what=f"{n} beats",
    )


async def every_node_sees(cluster: Cluster, expected: set[str]) -> bool:
    """Whether each live node's own view (fabric.Status over RPC) is exactly the others."""
    assert cluster.view is not None
    for node_id in expected:
        reply = await cluster.view.peers.get(node_id).call(
            STATUS, fabric_pb2.StatusRequest(), timeout=3
        )
        if set(reply.peers_alive) != expected - {node_id}:
            return False
    return True


async def assert_every_node_sees(cluster: Cluster, expected: set[str]) -> None:
    """Each live node's own view is exactly the other nodes (now: a settled view)."""
    assert await every_node_sees(cluster, expected)


@pytest.mark.timeout(120)
def test_strangers_records_of_every_role_are_never_dialled(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path / 'data'}") as c:
            await c.start_all(routers=2, gateways=2)
            assert c.view is not None
            before = snapshot(c)
            listener, announcer = Listener(), Announcer()
            try:
                async with Chatter(c):
                    attacker_key = zmq.curve_keypair()[0].decode()
                    fakes: list[NodeInfo] = []
                    for peer in c.view.membership.alive():
                        role, victim = peer.role, peer.node_id
                        fakes += [
                            record(
                                cluster_name, f"{role}-evil", role, listener.endpoint, attacker_key
                            ),  # a new node
                            record(
                                cluster_name, victim, role, listener.endpoint, attacker_key
                            ),  # hijack, own key
                            record(
                                cluster_name, victim, role, listener.endpoint, peer.info.public_key
                            ),  # hijack, real key
                            record(
                                cluster_name, victim, role, dead_endpoint(), peer.info.public_key
                            ),
                        ]  # hijack, dead end
                    # at once: each registration waits out mDNS probing (about a second)
                    await asyncio.gather(*(announcer.announce(fake) for fake in fakes))
                    bad = c.view.discovery.bad_records
                    await async_wait_until(
                        lambda: bad[RecordError.BAD_SIGNATURE] >= len(fakes),
                        timeout=20,
                        what="the fake records reached the cluster",
                    )
                    await beats(c, 3)  # time for any probe, and for a cut-off to show
                    assert listener.accepted == 0, "a node dialled an attacker's record"
                    assert snapshot(c) == before
                    await assert_every_node_sees(c, set(before))
            finally:
                await announcer.close()
                listener.close()

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_an_insiders_signed_records_are_still_only_hints(tmp_path: Path, cluster_name: str) -> None:
    """Holding the cluster secret (a revoked host, say) is not enough: an unauthorized key is
    never dialled, and a live node's public key at another endpoint cannot be proven."""

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path / 'data'}") as c:
            await c.start_all(routers=2, gateways=2)
            assert c.view is not None
            before = snapshot(c)
            signing = record_key(keys.load_secret(c.keys_dir, keys.CLUSTER_SECRET))
            unauthorized, proving = Listener(), Listener()
            announcer = Announcer()
            try:
                async with Chatter(c):
                    directory = c.view.membership.alive("directory")[0]
                    own_key = zmq.curve_keypair()[0].decode()
                    insider = [
                        record(
                            cluster_name,
                            "directory-evil",
                            "directory",
                            unauthorized.endpoint,
                            own_key,
                        ),
                        record(
                            cluster_name,
                            directory.node_id,
                            "directory",
                            unauthorized.endpoint,
                            own_key,
                        ),
                        record(
                            cluster_name,
                            directory.node_id,
                            "directory",
                            proving.endpoint,
                            directory.info.public_key,
                        ),
                        record(
                            cluster_name,
                            directory.node_id,
                            "directory",
                            dead_endpoint(),
                            directory.info.public_key,
                        ),
                    ]
                    # at once: each registration waits out mDNS probing (about a second)
                    await asyncio.gather(*(announcer.announce(r, signing) for r in insider))
                    refused = c.view.admission.refused
                    await async_wait_until(
                        lambda: refused["unauthorized_key"] >= 2 and refused["no_answer"] >= 1,
                        timeout=20,
                        what="the observer refused the insider's records",
                    )
                    await beats(c, 3)
                    assert unauthorized.accepted == 0, "a node dialled an unauthorized key"
                    assert snapshot(c) == before
                    await assert_every_node_sees(c, set(before))
            finally:
                await announcer.close()
                unauthorized.close()
                proving.close()

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_a_revoked_node_key_is_cut_off_within_a_second(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path / 'data'}") as c:
            await c.start_all(routers=2, gateways=2)
            assert c.view is not None
            keys.add_node(c.keys_dir, "host-b")
            host_b = keys.load_node(c.keys_dir, "host-b")
            outsider = c.start("router", SOIM_NODE_KEY="host-b")
            await c.wait_alive(outsider)
            await async_wait_until(
                lambda: every_node_sees(c, set(c.alive())),
                timeout=10,
                what="every node admits host-b's router",
            )
            directory = c.view.membership.alive("directory")[0]
            ctx = zmq.asyncio.Context()

            def as_host_b() -> RpcClient:
                def secure(sock: zmq.Socket) -> None:
                    sock.curve_secretkey, sock.curve_publickey = host_b.secret, host_b.public
                    sock.curve_serverkey = directory.info.public_key.encode()

                client = RpcClient(ctx, directory.info.endpoints["rpc"], secure=secure)
                client.start()
                return client

            opened = as_host_b()
            try:
                async with Chatter(c):
                    echo = fabric_pb2.EchoRequest(data=b"hi")
                    assert (await opened.call(ECHO, echo, timeout=3)).data == b"hi"
                    keys.revoke(c.keys_dir, "host-b")
                    revoked = time.monotonic()
                    await async_wait_until(
                        lambda: outsider[0].node_id not in c.alive(),
                        timeout=3,
                        what="the observer drops host-b",
                    )

                    async def refused() -> bool:
                        try:
                            await opened.call(ECHO, echo, timeout=1)
                        except RpcError as err:
                            return err.code == pb.UNAUTHENTICATED
                        return False

                    await async_wait_until(
                        refused, timeout=3, what="host-b's open connection refused"
                    )
                    cut = time.monotonic() - revoked
                    assert cut < 1.5, cut
                    fresh = as_host_b()
                    with pytest.raises(RpcError) as timed_out:
                        await fresh.call(ECHO, echo, timeout=1.5)
                    assert timed_out.value.code == pb.TIMEOUT
                    await fresh.close()
                    await async_wait_until(
                        lambda: every_node_sees(c, set(c.alive())),
                        timeout=3,
                        what="every node dropped host-b",
                    )
                    print(f"host-b cut off {cut * 1000:.0f} ms after the revocation")
            finally:
                await opened.close()
                ctx.destroy(linger=0)

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_a_second_process_with_a_live_node_id_refuses_to_start(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path / 'data'}") as c:
            [router] = c.start("router")
            await c.wait_alive([router])
            before = snapshot(c)
            twin_logs = tmp_path / "twin"  # not the router's log file (both open <node id>.log)
            twin_logs.mkdir()
            twin = NodeProcess("router", {**c.env, "SOIM_NODE_ID": router.node_id}, twin_logs)
            c.nodes.append(twin)
            code = await asyncio.to_thread(twin.wait, 30)
            assert code == 2, twin.log()
            assert "already announces node id" in twin.log()
            await beats(c, 1)
            assert snapshot(c) == before

    asyncio.run(main())


@pytest.mark.timeout(30)
def test_membership_refuses_a_second_identity_for_a_live_node_id(
    keys_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two authenticated processes with one node id (e.g. reached through different records):
    the live one stays; once it is dead, its successor is admitted."""

    async def main() -> None:
        ctx = zmq.asyncio.Context()
        security = Security(ctx, keys_dir)
        security.start()
        pubs = []
        try:
            infos = []
            for started in (1.0, 2.0):
                pub = ctx.socket(zmq.PUB)
                security.cluster_server(pub)
                port = pub.bind_to_random_port("tcp://127.0.0.1")
                pubs.append(Publisher(pub, "router-x"))
                ep = f"tcp://127.0.0.1:{port}"
                infos.append(
                    NodeInfo(
                        node_id="router-x",
                        role="router",
                        cluster="c",
                        version="1",
                        host="127.0.0.1",
                        endpoints={"rpc": ep, "events": ep},
                        metrics_port=1,
                        public_key=security.node.public.decode(),
                        client_key="",
                        started_at=started,
                    )
                )
            sub = Subscriber(ctx, secure=lambda s: security.cluster_client(s, security.node.public))
            membership = Membership("observer", sub)
            sub.start()
            membership.start()
            beat = fabric_pb2.Heartbeat(node_id="router-x", role="router", seq=1)
            membership.admit(infos[0])

            async def beating(i: int) -> bool:
                pubs[i].publish(HEARTBEAT_TOPIC, HEARTBEAT_METHOD, beat)
                return membership.get("router-x") is not None

            await async_wait_until(lambda: beating(0), timeout=5, what="first one alive")
            with caplog.at_level(logging.WARNING):
                membership.admit(infos[1])
            assert "refused a second process claiming live node id router-x" in caplog.text
            peer = membership.get("router-x")
            assert peer is not None and peer.info == infos[0]
            await async_wait_until(
                lambda: membership.get("router-x") is None,
                timeout=timing.PEER_DEAD_AFTER_S + 2,
                what="first one dead",
            )
            membership.admit(infos[1])
            await async_wait_until(lambda: beating(1), timeout=5, what="successor alive")
            peer = membership.get("router-x")
            assert peer is not None and peer.info == infos[1]
            await membership.close()
            await sub.close()
        finally:
            for pub in pubs:
                pub.sock.close(linger=0)
            security.stop()
            ctx.destroy(linger=0)

    asyncio.run(main())
