"""The node base: what every so-im process does besides its role.

Role: lifecycle start → register → serve → graceful stop (SIGTERM/SIGINT, under 5 s); logging
with the node id; Curve + ZAP on every socket; the fabric.* RPC methods; heartbeats; the live
membership view; RPC clients to peers; the Prometheus endpoint. A role subclasses `Node`, sets
`role`, registers its handlers in `on_start` and flushes in `on_stop`.
Peer sockets: binds an RPC ROUTER and an events PUB (both Curve servers, ZAP domain "cluster");
one events SUB connected to every discovered peer's PUB; DEALERs to peers via `PeerClients`;
zeroconf (AsyncZeroconf) for discovery; an HTTP listener for /metrics, /healthz and /readyz
(the role's `ready()` hook, run on the event loop through `fabric.readiness.ask`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable
from typing import ClassVar

import zmq
import zmq.asyncio
from zeroconf import NonUniqueNameException

import fabric
from fabric import env_file, heap, keys, logs, metrics, readiness, settings, timing
from fabric.admission import Admission
from fabric.config import Config, ConfigError
from fabric.discovery import Discovery, NodeInfo, record_key
from fabric.events import Publisher, Subscriber
from fabric.membership import (
    BYE_METHOD,
    BYE_TOPIC,
    DRAIN_METHOD,
    DRAIN_TOPIC,
    HEARTBEAT_METHOD,
    HEARTBEAT_TOPIC,
    Membership,
    Peer,
)
from fabric.methods import ECHO, NODE, STATUS, Method, RpcError
from fabric.peer_clients import PeerClients
from fabric.rpc_server import Call, RpcServer
from fabric.security import Security
from schema import cluster_pb2, fabric_pb2
from schema import common_pb2 as pb

log = logging.getLogger(__name__)


class Node:
    """Base of every role. Subclasses override the hooks at the bottom."""

    role: ClassVar[str] = "node"
    stores_ids: ClassVar[bool] = True
    """Whether ids in requests reach a database here: then each request's uint64 fields are
    checked against the signed 64-bit columns (fabric.id_range) before its handler runs."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.log = logging.LoggerAdapter(log, {"node": self.node_id})
        self.ctx = zmq.asyncio.Context()
        self.security = Security(self.ctx, cfg.keys_dir, cfg.node_key)
        self.started_at = time.time()
        self.stopping = asyncio.Event()
        self.rpc_sock = self.new_socket(zmq.ROUTER)
        self.pub_sock = self.new_socket(zmq.PUB)
        self.rpc = RpcServer(
            self.rpc_sock,
            self.node_id,
            timing.CLUSTER_MAX_FRAME_BYTES,
            gate=self._member_gate,
            check_ids=self.stores_ids,
        )
        self.publisher = Publisher(self.pub_sock, self.node_id)
        self.subscriber = Subscriber(
            self.ctx, max_bytes=timing.CLUSTER_MAX_FRAME_BYTES, secure=self._secure_sub
        )
        self.membership = Membership(
            self.node_id,
            self.subscriber,
            on_added=self.peer_added,
            on_updated=self.peer_updated,
            on_removed=self._peer_removed,
        )
        self.peers = PeerClients(
            self.ctx,
            self.membership,
            self.node_id,
            timing.CLUSTER_MAX_FRAME_BYTES,
            self.security.cluster_client,
        )
        self.admission = Admission(
            self.ctx, self.security, cfg.cluster, self.node_id, self.membership
        )
        self.discovery = Discovery(
            cfg,
            self.admission.hint,
            self.admission.gone,
            self.admission.hint,
            signing_key=record_key(keys.load_secret(cfg.keys_dir, keys.CLUSTER_SECRET)),
        )
        self.metrics_server = metrics.MetricsServer(cfg.host, cfg.metrics_port, self._readiness)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.endpoints: dict[str, str] = {}
        self.info: NodeInfo | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._beat_seq = 0
        self._welcome_due = False
        self._said_bye = False  # no heartbeat after the Bye: it would bring this node back
        self.drain_deadline_ms = 0
        self._refused: ConfigError | None = None  # set when a live node holds this node id
        self.discovery.on_conflict = self._node_id_taken

    # ---- lifecycle
    async def run(self) -> None:
        """Start, register, serve until `stop()` or a signal, then stop gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        try:
            await self.start()
            await self.stopping.wait()
        finally:
            await self.shutdown()
        if self._refused is not None:
            raise self._refused

    def stop(self) -> None:
        """Ask the node to stop (safe from a signal handler)."""
        self.stopping.set()

    async def start(self) -> None:
        """Bind, discover, register and begin serving."""
        self.security.start()
        self.security.cluster_server(self.rpc_sock)
        self.security.cluster_server(self.pub_sock)
        self.endpoints["rpc"] = self.bind_socket(self.rpc_sock, self.cfg.rpc_port)
        self.endpoints["events"] = self.bind_socket(self.pub_sock, self.cfg.events_port)
        self._loop = asyncio.get_running_loop()
        metrics_port = self.metrics_server.start()
        self.rpc.register(ECHO, self._echo)
        self.rpc.register(STATUS, self._status)
        self.rpc.register(NODE["Drain"], self._drain)
        await self.on_start()
        self.subscriber.start()
        self.membership.start()
        self.admission.own_rpc = self.endpoints["rpc"]
        self.membership.on_known = self.admission.gossip
        self.admission.start()
        self.security.watch(self._keys_changed)
        self._tasks.append(asyncio.ensure_future(self.rpc.serve()))
        self._tasks.append(asyncio.ensure_future(self._beat()))
        self._tasks.append(asyncio.ensure_future(self._welcome()))
        self.info = NodeInfo(
            node_id=self.node_id,
            role=self.role,
            cluster=self.cfg.cluster,
            version=fabric.__version__,
            host=self.cfg.advertise_host,
            endpoints=dict(self.endpoints),
            metrics_port=metrics_port,
            public_key=self.security.node.public.decode(),
            client_key=self.client_key(),
            started_at=self.started_at,
        )
        if self.cfg.discovery != "seeds":
            await self.discovery.async_start()
            try:
                await self.discovery.async_register(self.info, probe=not self.cfg.node_id_generated)
            except NonUniqueNameException:
                self._refused = self._node_id_error()
                raise self._refused from None
        for seed in self.cfg.seeds:
            self.admission.seed(seed.endpoint, seed.key_name)
        gc.collect()
        gc.freeze()  # what start-up made lives as long as the node: no collection scans it again
        heap.trim()
        gc.set_threshold(*timing.GC_THRESHOLDS)
        sys.setswitchinterval(timing.GIL_SWITCH_INTERVAL_S)
        self.log.info(
            "%s %s serving: %s, metrics :%d",
            self.role,
            self.node_id,
            " ".join(f"{k}={v}" for k, v in self.endpoints.items()),
            metrics_port,
        )

    async def shutdown(self) -> None:
        """Deregister, stop intake, flush, close everything with a short linger."""
        self.log.info("stopping")
        try:
            async with asyncio.timeout(timing.SHUTDOWN_BUDGET_S):
                await self._shutdown_steps()
        except TimeoutError:
            self.log.error(
                "shutdown took longer than %.1fs; closing hard", timing.SHUTDOWN_BUDGET_S
            )
        self.ctx.destroy(linger=0)
        self.log.info("stopped")

    async def _shutdown_steps(self) -> None:
        await self.before_bye()
        self._said_bye = True
        if self._refused is None:  # else the id is a live node's: a Bye would end it for peers
            self.publisher.publish(BYE_TOPIC, BYE_METHOD, fabric_pb2.Bye(node_id=self.node_id))
        await self.discovery.async_unregister()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.rpc.close()
        await self.on_stop()
        await self.admission.close()
        await self.peers.close()
        await self.membership.close()
        await self.subscriber.close()
        await self.discovery.async_close()
        self.metrics_server.stop()
        for sock in (self.rpc_sock, self.pub_sock):
            sock.close(linger=timing.SOCKET_LINGER_MS)
        self.security.stop()

    def _node_id_error(self) -> ConfigError:
        return ConfigError(
            "SOIM_NODE_ID",
            f"a live node of cluster {self.cfg.cluster!r} already announces node id "
            f"{self.node_id!r}; refusing to start",
        )

    def _node_id_taken(self, other: NodeInfo) -> None:
        """An older live node answered for this node's id after mDNS probing had passed (it
        was stalled): leave it the id, and stop as if probing had caught it (exit status 2)."""
        self.log.error(
            "node %s (started %.3f, rpc %s) holds this node id; stopping",
            other.node_id,
            other.started_at,
            other.endpoints.get("rpc", "?"),
        )
        self._refused = self._node_id_error()
        self.discovery.withdraw_silently()
        self.stop()

    # ---- helpers
    def new_socket(self, kind: int) -> zmq.asyncio.Socket:
        """A socket of this node's context with the fabric's linger and high-water marks."""
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, timing.SOCKET_LINGER_MS)
        sock.setsockopt(zmq.SNDHWM, timing.HWM_MESSAGES)
        sock.setsockopt(zmq.RCVHWM, timing.HWM_MESSAGES)
        sock.setsockopt(zmq.MAXMSGSIZE, timing.CLUSTER_MAX_FRAME_BYTES + timing.FRAME_SLACK_BYTES)
        return sock

    def bind_socket(self, sock: zmq.asyncio.Socket, port: int) -> str:
        """Bind on SOIM_HOST (`port` 0: any free port); return the advertised endpoint."""
        sock.bind(f"tcp://{self.cfg.host}:{port or '*'}")
        bound = sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1]
        return f"tcp://{self.cfg.advertise_host}:{bound}"

    def _secure_sub(self, sock: zmq.asyncio.Socket) -> None:
        self.security.cluster_client(sock, self.security.node.public)

    async def _beat(self) -> None:
        while True:
            self._publish_beat()
            await asyncio.sleep(timing.HEARTBEAT_INTERVAL_S)  # the heartbeat period

    def _publish_beat(self) -> None:
        self._welcome_due = False
        if self._said_bye:
            return  # peers that still hear of this node (another's beat) must not revive it
        self._beat_seq += 1
        load = self.load()
        metrics.NODE_LOAD.set(load)
        self.publisher.publish(
            HEARTBEAT_TOPIC,
            HEARTBEAT_METHOD,
            fabric_pb2.Heartbeat(
                node_id=self.node_id,
                role=self.role,
                seq=self._beat_seq,
                load=load,
                uptime_s=time.time() - self.started_at,
                sessions=self.session_count(),
                peers=len(self.membership.alive()),
                known=self._known(),
            ),
        )

    async def _welcome(self) -> None:
        """A peer whose SUB just connected to our events PUB (it admitted us) hears a beat
        WELCOME_BEAT_S later (once its subscription has arrived), not up to a heartbeat period
        later: the nodes of a restarted cluster count each other alive sooner."""
        monitor = self.pub_sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            while True:
                await monitor.recv_multipart()
                if not self._welcome_due:
                    self._welcome_due = True
                    asyncio.get_running_loop().call_later(timing.WELCOME_BEAT_S, self._welcomed)
        finally:
            with contextlib.suppress(zmq.ZMQError):
                self.pub_sock.disable_monitor()
            monitor.close(linger=0)

    def _welcomed(self) -> None:
        if self._welcome_due:
            self._publish_beat()

    def _known(self) -> list[fabric_pb2.KnownPeer]:
        """The peers this node admitted, for the heartbeat (how seeds spread the cluster)."""
        return [
            fabric_pb2.KnownPeer(
                node_id=p.node_id, rpc=p.info.endpoints["rpc"], key=p.info.public_key
            )
            for p in self.membership.alive()[: timing.MAX_KNOWN_PEERS]
        ]

    def _echo(
        self, req: fabric_pb2.EchoRequest, call: Call
    ) -> fabric_pb2.EchoReply | Awaitable[fabric_pb2.EchoReply]:
        if req.fail_code:  # any uint32: a code outside ErrorCode is answered as INTERNAL
            raise RpcError(pb.ErrorCode.ValueType(req.fail_code), "echo asked to fail")
        if req.delay_ms:
            return self._echo_later(req)
        return fabric_pb2.EchoReply(data=req.data)

    async def _echo_later(self, req: fabric_pb2.EchoRequest) -> fabric_pb2.EchoReply:
        await asyncio.sleep(req.delay_ms / 1000.0)  # the delay the caller asked for
        return fabric_pb2.EchoReply(data=req.data)

    def _status(self, req: fabric_pb2.StatusRequest, call: Call) -> fabric_pb2.StatusReply:
        if req.rpc_endpoint and call.peer_key:  # a node admitting us: admit it back
            self.admission.heard(req.rpc_endpoint, call.peer_key.decode())
        return fabric_pb2.StatusReply(
            node_id=self.node_id,
            role=self.role,
            cluster=self.cfg.cluster,
            version=fabric.__version__,
            uptime_s=time.time() - self.started_at,
            load=self.load(),
            endpoints=self.endpoints,
            metrics_port=self.metrics_server.port,
            peers_alive=[p.node_id for p in self.membership.alive()],
            client_key=self.client_key(),
            started_at=self.started_at,
            host=self.cfg.advertise_host,
        )

    def _drain(self, req: cluster_pb2.DrainRequest, call: Call) -> cluster_pb2.DrainReply:
        if not self.drain_deadline_ms:
            grace = req.grace_s or timing.DRAIN_GRACE_S
            self.drain_deadline_ms = int((time.time() + grace) * 1000)
            self.publisher.publish(
                DRAIN_TOPIC,
                DRAIN_METHOD,
                cluster_pb2.DrainNotice(
                    node_id=self.node_id,
                    role=self.role,
                    deadline_ms=self.drain_deadline_ms,
                    reason=req.reason[:200],
                ),
            )
            self.log.info("draining (%s); stopping in %.1fs", req.reason or "no reason", grace)
            self.on_drain()
            asyncio.get_running_loop().call_later(grace, self.stop)
        return cluster_pb2.DrainReply(deadline_ms=self.drain_deadline_ms)

    def _readiness(self) -> str | None:
        """/readyz, in the metrics server's request thread: None or a one-line reason."""
        if self.info is None:
            return "starting"
        return readiness.ask(self._loop, self._ready)

    async def _ready(self) -> str | None:
        if self.drain_deadline_ms:
            return "draining"
        return await self.ready()

    def _peer_removed(self, peer: Peer) -> None:
        self.peers.drop(peer.node_id)
        self.admission.retry(peer.node_id)
        self.peer_removed(peer)

    def _member_gate(self, identity: bytes, method: Method, peer_key: bytes, peer_addr: str) -> int:
        """Node-to-node requests: only from a key the cluster admits now. ZAP checked the key
        at the handshake; this refuses a connection opened before its key was revoked."""
        return pb.OK if self.security.authorized(peer_key) else pb.UNAUTHENTICATED

    def _keys_changed(self, revoked: frozenset[bytes], added: frozenset[bytes]) -> None:
        """authorized/ changed. Revoked keys: their peers are gone, their hints forgotten, and
        every subscriber of our events PUB must handshake again (the revoked ones cannot).
        Added keys: the records that carry them are probed."""
        self.admission.keys_changed(revoked, added)
        if revoked:
            self.membership.revoked(revoked)
            self._tasks.append(asyncio.ensure_future(self._rebind_events()))

    async def _rebind_events(self) -> None:
        """Unbind and bind the events PUB again: libzmq closes every connection accepted on
        an endpoint it unbinds, so each subscriber reconnects through ZAP. Events published
        in the gap are lost, as when a peer restarts; `on_keys_revoked` lets roles repair."""
        endpoint = self.pub_sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.pub_sock.unbind(endpoint)
        deadline = time.monotonic() + timing.REBIND_BUDGET_S
        while True:
            try:
                self.pub_sock.bind(endpoint)
                break
            except zmq.ZMQError:  # the old listener is still closing in libzmq's I/O thread
                if time.monotonic() > deadline:
                    self.log.error(
                        "could not bind %s again after a key revocation; stopping", endpoint
                    )
                    self.stop()
                    return
                await asyncio.sleep(timing.REBIND_RETRY_S)  # a retry pause, not a sync wait
        self.log.info("events PUB rebound after a key revocation")
        self.on_keys_revoked()

    # ---- hooks for roles
    async def on_start(self) -> None:
        """Register handlers, bind role sockets (endpoints go in `self.endpoints`)."""

    async def before_bye(self) -> None:
        """Stopping, while peers still count this node alive (it serves, its events reach
        them): the last moment to hand work over. Within the shutdown budget."""

    async def on_stop(self) -> None:
        """Flush and close role state; intake has stopped."""

    def on_drain(self) -> None:
        """`soimctl drain` asked this node to hand its work to peers before it stops."""

    async def ready(self) -> str | None:
        """/readyz: None when this node has what its role needs, else a one-line reason. Runs
        on the event loop and must not block it (`fabric.readiness` has the checks)."""
        return None

    def load(self) -> float:
        """The load figure sent in heartbeats."""
        return 0.0

    def session_count(self) -> int:
        """Client sessions held (gateways)."""
        return 0

    def client_key(self) -> str:
        """The z85 client-plane server key (gateways); empty for other roles."""
        return ""

    def peer_added(self, peer: Peer) -> None:
        """A peer became alive."""

    def peer_updated(self, peer: Peer) -> None:
        """A live peer's record changed."""

    def peer_removed(self, peer: Peer) -> None:
        """A peer died or left."""

    def on_keys_revoked(self) -> None:
        """Node keys were revoked and the events PUB rebound: events may have been lost."""


def main(node_cls: type[Node]) -> int:
    """Run one node of `node_cls` from the environment; config errors are one line, exit 2."""
    heap.limit_arenas()
    try:
        env_file.load()
        cfg = Config.from_env(role=node_cls.role)
    except ConfigError as err:
        print(f"{node_cls.role}: {err}", file=sys.stderr)
        return 2
    logs.configure(cfg.log_level, cfg.log_format, cfg.node_id)
    for line in settings.unknown(os.environ):
        log.warning("%s", line)
    try:
        asyncio.run(_run(node_cls, cfg))
    except ConfigError as err:
        print(f"{node_cls.role}: {err}", file=sys.stderr)
        return 2
    return 0


async def _run(node_cls: type[Node], cfg: Config) -> None:
    await node_cls(cfg).run()
