"""The router node: presence and routing over a consistent-hash ring of routers.

Role: own the users that hash to this router on the ring of live routers (`fabric.ring.Ring`
over their node ids, itself included) and hold their sessions (`presence.Presence`); serve the
Router RPCs of `api.ROUTER` — BindSessions (NOT_OWNER per binding for users of another router;
a full snapshot replaces one gateway's sessions), UnbindSessions, Lookup, OnlineUsers (one page
of owned users) and Deliver (fan-out through `delivery.fan_out`, published as GatewayDelivery
events under `api.delivery_topic(gateway id)`). Membership drives the rest: a router joining,
leaving or dying changes the ring and the sessions of users this router no longer owns are
dropped at once (gateways re-bind them at the new owner); a gateway dying takes its sessions
with it. The heartbeat load is the number of bound sessions. The contacts of its users hear
when they come online (a fresh session, none before) and go offline (the last session gone,
after a grace) through `announce.Announcer`; rebinds and snapshots announce nothing, and a
router that stops announces the offlines still in their grace before it says goodbye.
Peer sockets: those of `fabric.node.Node` — the RPC ROUTER (gateways and storage call it), the
events PUB (heartbeats and deliveries; every gateway subscribes), the events SUB (peers'
heartbeats, for membership) and peer DEALERs (directories' Contacts and other routers' Deliver,
for presence announcements).
"""

from __future__ import annotations

import re

from prometheus_client import Counter, Gauge

from fabric.config import Config, read_int
from fabric.membership import Peer
from fabric.methods import RpcError
from fabric.node import Node
from fabric.ring import LiveRing
from fabric.rpc_server import Call
from nodes.router.announce import OFFLINE_GRACE_MAX_S, OFFLINE_GRACE_S, Announcer
from nodes.router.delivery import fan_out
from nodes.router.presence import Binding, Presence
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.router import DELIVERY_METHOD, ROUTER, delivery_topic

SESSIONS = Gauge("soim_router_sessions", "Sessions bound at this router")
USERS = Gauge("soim_router_users", "Users with a session bound at this router")
BIND_RESULTS = Counter("soim_router_bind_results_total", "Bindings answered, by result", ["result"])
SESSIONS_DROPPED = Counter(
    "soim_router_sessions_dropped_total",
    "Sessions forgotten other than by unbind, by reason",
    ["reason"],
)
DELIVERIES = Counter("soim_router_deliveries_published_total", "GatewayDelivery events published")
PUSHES = Counter("soim_router_session_pushes_total", "Pushes published to sessions")
PUSHES_TOO_LARGE = Counter(
    "soim_router_pushes_too_large_total", "Session pushes dropped: larger than a frame"
)

GATEWAY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
"""A node id as SOIM_NODE_ID allows it (fabric.config)."""
MAX_SESSION_ID_BYTES = 255  # a ZeroMQ routing identity
MAX_DEVICE_CHARS = 32  # client.proto RegisterRequest.device
MAX_LOOKUP_USERS = 1000  # keeps a Lookup reply well under the frame limit
MAX_PAGE = 1000  # OnlineUsers page size ceiling
DEFAULT_PAGE = 50  # OnlineUsers limit 0
EVENT_HEADER_ROOM = 512  # bytes of a frame left for the event header (method, sender)

_OK = pb.OK
_NOT_OWNER = pb.NOT_OWNER
_INVALID = pb.INVALID_ARGUMENT


class RouterNode(Node):
    """A router."""

    role = "router"
    stores_ids = False  # presence is in memory: any uint64 is a valid dict key and ring point

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.presence = Presence(on_empty=self._user_left)
        self._live = LiveRing(self.membership, "router", include=self.node_id)
        self.ring = self._live.current()
        self.announcer = Announcer(
            self.peers,
            self.membership,
            lambda: self.ring,
            self.node_id,
            self._publish,
            lambda user_id: self.owns(user_id) and not self.presence.sessions_of(user_id),
            read_int(cfg.extra, "SOIM_PRESENCE_GRACE_S", OFFLINE_GRACE_S, 0, OFFLINE_GRACE_MAX_S),
        )
        self._delivery_budget = cfg.max_frame_bytes - EVENT_HEADER_ROOM
        self._bind_counts = {
            code: BIND_RESULTS.labels(pb.ErrorCode.Name(code))
            for code in (_OK, _NOT_OWNER, _INVALID)
        }

    # ---- node hooks
    async def on_start(self) -> None:
        SESSIONS.set_function(lambda: self.presence.session_count)
        USERS.set_function(lambda: self.presence.user_count)
        self.rpc.register(ROUTER["BindSessions"], self._bind)
        self.rpc.register(ROUTER["UnbindSessions"], self._unbind)
        self.rpc.register(ROUTER["Lookup"], self._lookup)
        self.rpc.register(ROUTER["OnlineUsers"], self._online_users)
        self.rpc.register(ROUTER["Deliver"], self._deliver)
        self.announcer.start()

    async def before_bye(self) -> None:
        await self.announcer.announce_pending()

    async def on_stop(self) -> None:
        await self.announcer.close()

    def load(self) -> float:
        return float(self.presence.session_count)

    def peer_added(self, peer: Peer) -> None:
        if peer.role == "router":
            self._ring_changed()

    def peer_removed(self, peer: Peer) -> None:
        if peer.role == "router":
            self._ring_changed()
        elif peer.role == "gateway":
            dropped = self.presence.drop_gateway(peer.node_id)
            SESSIONS_DROPPED.labels("gateway_gone").inc(dropped)
            self.log.info("gateway %s gone: dropped %d sessions", peer.node_id, dropped)

    def _user_left(self, user_id: int) -> None:
        """The last session of `user_id` went: announce it offline after the grace, unless it
        went because another router owns the user now."""
        if self.owns(user_id):
            self.announcer.went_offline(user_id)

    # ---- ring
    def owns(self, user_id: int) -> bool:
        """Is `user_id` this router's on its current ring?"""
        return self.ring.owner(user_id) == self.node_id

    def _ring_changed(self) -> None:
        ring = self._live.current()
        if ring is self.ring:
            return
        self.ring = ring
        dropped = self.presence.retain_users(self.owns)
        SESSIONS_DROPPED.labels("ring_change").inc(dropped)
        self.log.info(
            "ring now %s: dropped %d sessions of users owned elsewhere",
            ",".join(sorted(ring.members)),
            dropped,
        )

    # ---- RPC handlers (plain functions: answered in the same batch pass)
    def _bind(self, req: cluster_pb2.BindRequest, call: Call) -> cluster_pb2.BindReply:
        snapshot_of = req.gateway_id if req.full_snapshot else None
        if snapshot_of is not None and not GATEWAY_ID_RE.match(snapshot_of):
            raise RpcError(_INVALID, "a full snapshot needs a valid gateway_id")
        results: list[pb.ErrorCode.ValueType] = []
        accepted: list[Binding] = []
        fresh: set[int] = set()
        for b in req.bindings:
            code = self._check(b, snapshot_of)
            results.append(code)
            if code == _OK:
                accepted.append(Binding(b.user_id, b.gateway_id, b.session_id, b.device))
                if b.fresh and snapshot_of is None:
                    fresh.add(b.user_id)
        announcer = self.announcer
        if snapshot_of is not None:
            sessions_of = self.presence.sessions_of
            had_none = {b.user_id for b in accepted if not sessions_of(b.user_id)}
            dropped = self.presence.replace_gateway(snapshot_of, accepted)
            SESSIONS_DROPPED.labels("snapshot").inc(dropped)
            for user_id in had_none:
                announcer.rebound(user_id)
        else:
            for binding in accepted:
                user_id = binding.user_id
                if not self.presence.bind(*binding):
                    continue
                if user_id in fresh:
                    announcer.came_online(user_id)
                else:
                    announcer.rebound(user_id)
        for code in results:
            self._bind_counts[code].inc()
        return cluster_pb2.BindReply(results=results)

    def _check(
        self, b: cluster_pb2.SessionBinding, snapshot_of: str | None
    ) -> pb.ErrorCode.ValueType:
        if (
            not b.user_id
            or not b.session_id
            or len(b.session_id) > MAX_SESSION_ID_BYTES
            or len(b.device) > MAX_DEVICE_CHARS
            or not GATEWAY_ID_RE.match(b.gateway_id)
            or (snapshot_of is not None and b.gateway_id != snapshot_of)
        ):
            return _INVALID
        return _OK if self.owns(b.user_id) else _NOT_OWNER

    def _unbind(self, req: cluster_pb2.UnbindRequest, call: Call) -> cluster_pb2.UnbindReply:
        for s in req.sessions:
            self.presence.unbind(s.user_id, s.gateway_id, s.session_id)
        return cluster_pb2.UnbindReply()

    def _lookup(self, req: cluster_pb2.UserIds, call: Call) -> cluster_pb2.LookupReply:
        if len(req.user_ids) > MAX_LOOKUP_USERS:
            raise RpcError(_INVALID, f"at most {MAX_LOOKUP_USERS} user ids per lookup")
        reply = cluster_pb2.LookupReply()
        for user_id in req.user_ids:
            entry = reply.users.add(user_id=user_id)
            for b in self.presence.bindings_of(user_id):
                entry.sessions.add(
                    user_id=user_id,
                    gateway_id=b.gateway_id,
                    session_id=b.session_id,
                    device=b.device,
                )
        return reply

    def _online_users(
        self, req: client_pb2.OnlineUsersRequest, call: Call
    ) -> cluster_pb2.RouterOnlineUsersReply:
        limit = min(req.limit or DEFAULT_PAGE, MAX_PAGE)
        page, more = self.presence.users_after(req.cursor, limit)
        return cluster_pb2.RouterOnlineUsersReply(user_ids=page, more=more)

    def _deliver(self, req: cluster_pb2.DeliverBatch, call: Call) -> cluster_pb2.DeliverReply:
        return cluster_pb2.DeliverReply(sessions=self._publish(req))

    def _publish(self, req: cluster_pb2.DeliverBatch) -> int:
        """Fan `req` out to the gateways holding its users' sessions; return the pushes."""
        out = fan_out(self.presence, req, self.node_id, self._delivery_budget)
        publish = self.publisher.publish
        for gateway_id, event in out.events:
            publish(delivery_topic(gateway_id), DELIVERY_METHOD, event)
        DELIVERIES.inc(len(out.events))
        PUSHES.inc(out.sessions)
        if out.too_large:
            PUSHES_TOO_LARGE.inc(out.too_large)
        return out.sessions
