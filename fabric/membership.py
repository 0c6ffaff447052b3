"""The live membership view: authenticated peers, alive while their heartbeats come.

Role: keep one view of the peers `fabric.admission` has admitted (their identity came over an
authenticated Curve link, never from a discovery record) and of which of them are alive by the
heartbeats and goodbyes heard on the events SUB, and call `on_added` / `on_updated` /
`on_removed` exactly once per transition. A peer is alive once it was admitted and a heartbeat
came; it is dead when the SUB's connection to it broke and reconnects are refused
(`fabric.link_watch`: a killed process, within about LINK_DEAD_CONFIRM_S + 0.2 s), after
PEER_DEAD_AFTER_S without a heartbeat (a frozen process, a vanished host), at once on its `Bye`
event (an mDNS goodbye proves nothing: anyone can send one) or when its key is revoked. A dead
peer whose beats resume comes back (one found dead by its link only once a handshake with it
succeeds again: beats it sent before it died may still be queued). A `DrainNotice` marks a
peer as draining (alive, but to be given no new work). A second process claiming the id of a
live peer is refused (logged and counted); once the first is dead, a successor with that id is
admitted.
Peer sockets: none of its own; it drives the node's events `Subscriber` (connect/disconnect),
connecting to each admitted peer's events PUB with that peer's server key, and follows that
SUB's monitor through a `LinkWatch`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fabric import envelope, metrics, timing
from fabric.discovery import NodeInfo
from fabric.events import Subscriber
from fabric.link_watch import LinkWatch
from schema import cluster_pb2, fabric_pb2
from schema.contracts.roles import ROLES

log = logging.getLogger(__name__)

HEARTBEAT_TOPIC = b"hb"
BYE_TOPIC = b"bye"
HEARTBEAT_METHOD = "fabric.Heartbeat"
BYE_METHOD = "fabric.Bye"
DRAIN_TOPIC = b"drain"
DRAIN_METHOD = "node.DrainNotice"

PeerCallback = Callable[["Peer"], None]


@dataclass
class Peer:
    """One peer as the membership view knows it."""

    info: NodeInfo
    alive: bool = False
    last_beat: float = 0.0  # time.monotonic() of the last heartbeat
    first_seen: float = field(default_factory=time.time)
    load: float = 0.0
    sessions: int = 0
    uptime_s: float = 0.0
    peers: int = 0  # live peers it sees, by its last heartbeat
    draining: bool = False  # it announced a drain: send it no new work
    link_down: bool = False  # found dead by its broken link: beats count once it reconnects

    @property
    def node_id(self) -> str:
        return self.info.node_id

    @property
    def role(self) -> str:
        return self.info.role


class Membership:
    """Live peers of this node's cluster (never itself)."""

    def __init__(
        self,
        self_id: str,
        subscriber: Subscriber,
        *,
        on_added: PeerCallback | None = None,
        on_updated: PeerCallback | None = None,
        on_removed: PeerCallback | None = None,
    ) -> None:
        self.self_id = self_id
        self.subscriber = subscriber
        self._on_added = on_added
        self._on_updated = on_updated
        self._on_removed = on_removed
        self._peers: dict[str, Peer] = {}
        self._alive: dict[str | None, list[Peer]] = {}
        self._alive_rpc: set[str] | None = None  # RPC endpoints of live peers, when asked
        self._sweeper: asyncio.Task[None] | None = None
        self.on_known: Callable[[Sequence[fabric_pb2.KnownPeer]], None] | None = None
        """Called with the peers a member's heartbeat lists (hints for fabric.admission)."""
        self._links = LinkWatch(subscriber.sock, self._link_lost, self._link_back)
        subscriber.on(HEARTBEAT_TOPIC, self._heartbeat)
        subscriber.on(BYE_TOPIC, self._bye)
        subscriber.on(DRAIN_TOPIC, self._drain)

    # ---- queries
    def alive(self, role: str | None = None) -> list[Peer]:
        """Live peers, optionally of one role, ordered by node id (a fresh list each call,
        computed once per change of the view: hot paths ask on every message)."""
        cached = self._alive.get(role)
        if cached is None:
            cached = self._alive[role] = sorted(
                (p for p in self._peers.values() if p.alive and (role is None or p.role == role)),
                key=lambda p: p.node_id,
            )
        return list(cached)

    def get(self, node_id: str) -> Peer | None:
        """The peer with this id if it is alive."""
        peer = self._peers.get(node_id)
        return peer if peer is not None and peer.alive else None

    # ---- lifecycle
    def start(self) -> None:
        """Start looking for silent peers and broken links."""
        if self._sweeper is None:
            self._links.start()
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def close(self) -> None:
        """Stop the sweeper and the link watch."""
        await self._links.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None

    # ---- admission
    def admitted_at(self, rpc_endpoint: str) -> bool:
        """Whether a live peer answers at `rpc_endpoint` (a dead one's successor may come back
        at the same endpoint, so it does not count)."""
        if self._alive_rpc is None:
            self._alive_rpc = {p.info.endpoints.get("rpc", "") for p in self.alive()}
        return rpc_endpoint in self._alive_rpc

    def admit(self, info: NodeInfo) -> None:
        """`info` came over an authenticated link (fabric.admission): follow that peer."""
        if info.node_id == self.self_id:
            return
        known = self._peers.get(info.node_id)
        if known is None:
            self._peers[info.node_id] = Peer(info)
            self._follow(info)
            return
        if known.info == info:
            return
        same_process = (
            known.info.started_at == info.started_at and known.info.public_key == info.public_key
        )
        if not same_process and known.alive:
            metrics.BAD_FRAMES.labels("membership", "duplicate_node_id").inc()
            log.warning(
                "refused a second process claiming live node id %s (at %s); the live one is at %s",
                info.node_id,
                info.endpoints.get("rpc"),
                known.info.endpoints.get("rpc"),
            )
            return
        self._unfollow(known.info)
        known.info = info
        known.link_down = False
        self._alive_rpc = None
        self._follow(info)
        if known.alive and self._on_updated:
            self._on_updated(known)

    def revoked(self, keys: frozenset[bytes]) -> None:
        """These node keys are no longer authorized: their peers are gone at once."""
        for peer in list(self._peers.values()):
            if peer.info.public_key.encode() in keys:
                log.warning("peer %s: its key was revoked", peer.node_id)
                self._forget(peer.node_id)

    def _follow(self, info: NodeInfo) -> None:
        self.subscriber.connect(info.endpoints["events"], info.public_key.encode())

    def _unfollow(self, info: NodeInfo) -> None:
        self.subscriber.disconnect(info.endpoints.get("events", ""))
        self._links.forget(info.endpoints.get("events", ""))

    # ---- links
    def _link_lost(self, endpoint: str) -> None:
        for peer in self._peers.values():
            if peer.info.endpoints.get("events") == endpoint:
                peer.link_down = True
                if peer.alive:
                    log.info("peer %s: its link broke and reconnects are refused", peer.node_id)
                    self._dead(peer)

    def _link_back(self, endpoint: str) -> None:
        for peer in self._peers.values():
            if peer.info.endpoints.get("events") == endpoint:
                peer.link_down = False

    # ---- heartbeat events
    def _heartbeat(self, topic: bytes, env: envelope.Envelope) -> None:
        try:
            beat = envelope.parse_payload(fabric_pb2.Heartbeat, env.payload)
        except envelope.EnvelopeError as err:
            metrics.BAD_FRAMES.labels("membership", err.reason.value).inc()
            return
        peer = self._peers.get(beat.node_id)
        if peer is None or beat.role != peer.role or peer.link_down:
            return  # not (yet) admitted, a goodbye already came, or its link is dead
        peer.last_beat = time.monotonic()
        peer.load = beat.load
        peer.sessions = beat.sessions
        peer.uptime_s = beat.uptime_s
        peer.peers = beat.peers
        if beat.known and self.on_known is not None:
            self.on_known(beat.known)
        if not peer.alive:
            peer.alive = True
            log.info("peer %s (%s) alive", peer.node_id, peer.role)
            self._gauge()
            if self._on_added:
                self._on_added(peer)

    def _bye(self, topic: bytes, env: envelope.Envelope) -> None:
        try:
            bye = envelope.parse_payload(fabric_pb2.Bye, env.payload)
        except envelope.EnvelopeError as err:
            metrics.BAD_FRAMES.labels("membership", err.reason.value).inc()
            return
        self._forget(bye.node_id)

    def _drain(self, topic: bytes, env: envelope.Envelope) -> None:
        try:
            notice = envelope.parse_payload(cluster_pb2.DrainNotice, env.payload)
        except envelope.EnvelopeError as err:
            metrics.BAD_FRAMES.labels("membership", err.reason.value).inc()
            return
        peer = self._peers.get(notice.node_id)
        if peer is not None and not peer.draining:
            peer.draining = True
            if peer.alive and self._on_updated:
                self._on_updated(peer)

    def _forget(self, node_id: str) -> None:
        peer = self._peers.pop(node_id, None)
        if peer is None:
            return
        self._unfollow(peer.info)
        if peer.alive:
            peer.alive = False
            self._gauge()
            if self._on_removed:
                self._on_removed(peer)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(timing.LIVENESS_CHECK_INTERVAL_S)  # periodic liveness check
            horizon = time.monotonic() - timing.PEER_DEAD_AFTER_S
            for peer in list(self._peers.values()):
                if peer.alive and peer.last_beat < horizon:
                    self._dead(peer)

    def _dead(self, peer: Peer) -> None:
        peer.alive = False
        self._gauge()
        if self._on_removed:
            self._on_removed(peer)

    def _gauge(self) -> None:
        """A peer came or went: forget cached answers, update the gauges."""
        self._alive.clear()
        self._alive_rpc = None
        counts = dict.fromkeys(ROLES, 0)
        for peer in self._peers.values():
            counts[peer.role] = counts.get(peer.role, 0) + peer.alive
        for role, n in counts.items():
            metrics.PEERS_ALIVE.labels(role).set(n)
