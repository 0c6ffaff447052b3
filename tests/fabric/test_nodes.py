"""Real node processes of one cluster: discovery within 3 s, cluster isolation, kill -9 noticed
within 4 s, a graceful stop noticed at once and finished in under 5 s (and never undone by
the peers' heartbeats), keys enforced, and
`soimctl nodes --json` listing them, also right after a node joined."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import zmq

from fabric import envelope, keys
from fabric.config import Config
from fabric.discovery import RecordError
from fabric.methods import ECHO, RpcError
from schema import common_pb2 as pb
from schema import fabric_pb2
from tests.processes import NodeProcess, node_processes
from tests.support import async_wait_until
from tools import soimctl
from tools.cluster_view import ClusterView


def view_config(env: dict[str, str]) -> Config:
    return Config.from_env(env, role="test")


def alive_ids(view: ClusterView) -> Callable[[], set[str]]:
    return lambda: {p.node_id for p in view.membership.alive()}


@pytest.mark.timeout(60)
def test_discovery_isolation_and_failure_detection(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    other_env = {**cluster_env, "SOIM_CLUSTER": cluster_env["SOIM_CLUSTER"] + "x"}

    async def main(nodes: list[NodeProcess]) -> None:
        async with ClusterView(view_config(cluster_env)) as view:
            a = NodeProcess("router", cluster_env, tmp_path)
            b = NodeProcess("directory", cluster_env, tmp_path)
            stranger = NodeProcess("router", other_env, tmp_path)
            nodes += [a, b, stranger]
            await async_wait_until(
                lambda: {a.node_id, b.node_id} <= set(view.discovery.peers()),
                timeout=20,
                what="both nodes registered",
            )
            registered = time.monotonic()
            await async_wait_until(
                lambda: alive_ids(view)() == {a.node_id, b.node_id},
                timeout=5,
                what="both nodes alive",
            )
            # the two nodes see each other: ask each over RPC who it sees
            for me, other in ((a, b), (b, a)):
                client = view.peers.get(me.node_id)
                await async_wait_until(
                    lambda c=client, o=other: _sees(c, o.node_id),
                    timeout=5,
                    what=f"{me.node_id} sees {other.node_id}",
                )
            assert time.monotonic() - registered < 3.0
            assert stranger.node_id not in alive_ids(view)()
            assert stranger.node_id not in view.discovery.peers()

            b.kill()
            killed = time.monotonic()
            await async_wait_until(
                lambda: b.node_id not in alive_ids(view)(), timeout=6, what="kill -9 noticed"
            )
            assert time.monotonic() - killed < 4.5

            a.stop()
            stopped = time.monotonic()
            await async_wait_until(
                lambda: a.node_id not in alive_ids(view)(), timeout=3, what="graceful stop noticed"
            )
            assert time.monotonic() - stopped < 1.5
            assert a.wait(6) == 0
            assert time.monotonic() - stopped < 5.0

    with node_processes(cluster_env, tmp_path) as nodes:
        asyncio.run(main(nodes))


@pytest.mark.timeout(60)
def test_a_node_that_said_goodbye_stays_gone(cluster_env: dict[str, str], tmp_path: Path) -> None:
    """A stopping node sends no heartbeat after its Bye. The peers' heartbeats still name it for
    a moment (the peers they know, which is how seeds spread a cluster), so an observer that has
    forgotten it admits it again; a beat of its own would then count it alive until its link
    broke (it did, for ~0.6 s, before the fix)."""

    async def main(nodes: list[NodeProcess]) -> None:
        async with ClusterView(view_config(cluster_env)) as view:
            leaving = NodeProcess("router", cluster_env, tmp_path)
            nodes += [leaving, *(NodeProcess("router", cluster_env, tmp_path) for _ in range(3))]
            ids = {n.node_id for n in nodes}
            await async_wait_until(lambda: alive_ids(view)() >= ids, timeout=20, what="all alive")
            leaving.stop()
            await async_wait_until(
                lambda: leaving.node_id not in alive_ids(view)(), timeout=3, what="its Bye heard"
            )
            await async_wait_until(
                lambda: leaving.proc.poll() is not None or leaving.node_id in alive_ids(view)(),
                timeout=10,
                interval=0.005,
                what="the stopped node's exit",
            )
            assert leaving.node_id not in alive_ids(view)(), "a node that said goodbye came back"
            assert leaving.wait(1) == 0

    with node_processes(cluster_env, tmp_path) as nodes:
        asyncio.run(main(nodes))


async def _sees(client: object, node_id: str) -> bool:
    from fabric.methods import STATUS
    from fabric.rpc_client import RpcClient

    assert isinstance(client, RpcClient)
    status = await client.call(STATUS, fabric_pb2.StatusRequest(), timeout=2)
    return node_id in status.peers_alive


@pytest.mark.timeout(60)
def test_node_without_cluster_keys_is_refused(cluster_env: dict[str, str], tmp_path: Path) -> None:
    intruder_keys = tmp_path / "intruder-keys"
    keys.generate(intruder_keys)
    intruder_env = {**cluster_env, "SOIM_KEYS_DIR": str(intruder_keys)}

    async def main(nodes: list[NodeProcess]) -> None:
        node = NodeProcess("router", cluster_env, tmp_path)
        nodes.append(node)
        async with ClusterView(view_config(cluster_env)) as view:
            await async_wait_until(
                lambda: node.node_id in alive_ids(view)(), timeout=15, what="node alive"
            )
            endpoint = view.membership.alive()[0].info.endpoints["rpc"]
            async with ClusterView(view_config(intruder_env)) as intruder:
                # the node's record is not signed with the intruder's cluster secret: it is
                # dropped; the intruder hears no heartbeat and gets no answer
                bad = intruder.discovery.bad_records
                await async_wait_until(
                    lambda: bad[RecordError.BAD_SIGNATURE] > 0,
                    timeout=10,
                    what="intruder refuses the node's record",
                )
                for _ in range(2):  # heartbeats the cluster's own view hears meanwhile
                    await _next_beat(view, node.node_id)
                assert intruder.membership.alive() == []
                assert node.node_id not in intruder.discovery.peers()
                server_key = keys.load_node(view.cfg.keys_dir).public  # public, so known
                client = _client_with_keys(
                    intruder, endpoint, keys.load_node(intruder_keys), server_key
                )
                with pytest.raises(RpcError) as err:
                    await client.call(ECHO, fabric_pb2.EchoRequest(data=b"let me in"), timeout=1.5)
                assert err.value.code == pb.TIMEOUT
                await client.close()
        _plain_text_peer_gets_nothing(endpoint)

    with node_processes(cluster_env, tmp_path) as nodes:
        asyncio.run(main(nodes))


async def _next_beat(view: ClusterView, node_id: str) -> None:
    """Wait until `view` hears another heartbeat of `node_id`."""
    peer = view.membership.get(node_id)
    assert peer is not None
    before = peer.last_beat
    await async_wait_until(lambda: peer.last_beat > before, timeout=5, what="a heartbeat")


def _client_with_keys(
    view: ClusterView, endpoint: str, pair: keys.KeyPair, server_key: bytes
) -> object:
    from fabric.rpc_client import RpcClient

    def secure(sock: zmq.Socket) -> None:
        sock.curve_secretkey = pair.secret
        sock.curve_publickey = pair.public
        sock.curve_serverkey = server_key

    return RpcClient(view.ctx, endpoint, secure=secure)


def _plain_text_peer_gets_nothing(endpoint: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    sock.send_multipart(envelope.request(ECHO.name, 1, 2**62, b""))
    assert sock.poll(1500) == 0
    sock.close(0)
    ctx.term()


@pytest.mark.timeout(60)
def test_soimctl_nodes_json_lists_both(
    cluster_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in cluster_env.items():
        monkeypatch.setenv(key, value)
    with node_processes(cluster_env, tmp_path) as nodes:
        nodes += [
            NodeProcess("router", cluster_env, tmp_path),
            NodeProcess("gateway", cluster_env, tmp_path),
        ]
        wanted = {(n.role, n.node_id) for n in nodes}
        deadline = time.monotonic() + 20
        while True:
            out = io.StringIO()
            with redirect_stdout(out):
                assert soimctl.main(["nodes", "--json", "--wait", "3"]) == 0
            listing = json.loads(out.getvalue())
            got = {(n["role"], n["node_id"]) for n in listing["nodes"]}
            if got == wanted or time.monotonic() > deadline:
                break
        assert got == wanted, "\n".join(n.log() for n in nodes)
        assert listing["cluster"] == cluster_env["SOIM_CLUSTER"]
        gateway = next(n for n in listing["nodes"] if n["role"] == "gateway")
        assert gateway["endpoints"]["rpc"].startswith("tcp://127.0.0.1:")
        assert gateway["metrics_port"] > 0


@pytest.mark.timeout(90)
def test_a_fresh_view_lists_a_node_that_just_joined(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    """Heartbeats say how many peers a node sees; a view settled right after a node joined
    (whose mDNS answer comes late, at most once a second per record) still lists it."""

    async def main(nodes: list[NodeProcess]) -> None:
        async with ClusterView(view_config(cluster_env)) as observer:
            nodes += [
                NodeProcess("router", cluster_env, tmp_path),
                NodeProcess("directory", cluster_env, tmp_path),
            ]
            for _ in range(4):
                joined = NodeProcess("router", cluster_env, tmp_path)
                nodes.append(joined)
                ids = {n.node_id for n in nodes if n.proc.poll() is None}
                await async_wait_until(
                    lambda i=ids: alive_ids(observer)() == i,
                    timeout=20,
                    what="the observer sees every node",
                )
                async with ClusterView(view_config(cluster_env)) as fresh:
                    assert {p.node_id for p in await fresh.settle(10.0)} == ids
                await async_wait_until(
                    lambda i=ids: all(p.peers == len(i) - 1 for p in observer.membership.alive()),
                    timeout=5,
                    what="every heartbeat counts the other nodes",
                )
                joined.stop()
                assert joined.wait(6) == 0

    with node_processes(cluster_env, tmp_path) as nodes:
        asyncio.run(main(nodes))
