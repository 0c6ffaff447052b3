"""The gateway node: client access over a Curve ROUTER on a well-known port.

Role: accept `soim` clients (register, login, resume, the people, group and message commands),
hold their sessions, keep each session bound at its owner router, push to clients what routers
publish for this gateway, and move sessions to a gateway below its share after a failover
(`nodes.gateway.rebalance`). The user of every request comes from the session, never the client.
Peer sockets: the client ROUTER (Curve server, ZAP domain "client", port SOIM_GATEWAY_PORT,
messages capped at SOIM_MAX_FRAME_BYTES by libzmq, its connections followed by `Connections`
through the socket's monitor PAIR, the bytes queued for each session capped by `Backlogs`);
the WebSocket plane on SOIM_WEB_PORT when set (`nodes.gateway.web_plane`: the same
requests, sessions and pushes, its connections' replies and pushes diverted to it);
the events SUB follows every router's PUB (topic
`delivery_topic(this gateway)`); DEALERs to directories and routers; plus everything of
`fabric.node.Node`.
"""

from __future__ import annotations

import asyncio
import time

import zmq

from fabric import envelope, metrics, readiness, timing
from fabric.batch_io import send_batch
from fabric.keys import load_client_plane_public
from fabric.membership import Peer
from fabric.methods import Method
from fabric.node import Node
from fabric.rpc_server import Handler, RpcServer
from nodes.gateway import stats
from nodes.gateway.access import AccessCache
from nodes.gateway.auth import AuthCommands
from nodes.gateway.backlog import Backlogs
from nodes.gateway.binding import RouteBinder
from nodes.gateway.connections import Connections
from nodes.gateway.limits import Limiter
from nodes.gateway.messaging import Messaging
from nodes.gateway.options import GatewayOptions
from nodes.gateway.rebalance import Rebalancer, accepting_gateways, redirect_notice, serving
from nodes.gateway.revocation import SessionEnder
from nodes.gateway.searching import MessageSearch
from nodes.gateway.send_batcher import SendBatcher
from nodes.gateway.sessions import Session, SessionTable
from nodes.gateway.social import Social
from nodes.gateway.typing import TypingRelay
from nodes.gateway.unauth import UnauthCount
from nodes.gateway.upstream import Upstream
from nodes.gateway.web_plane import WebPlane
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.client import AUTHENTICATING, CLIENT, PRE_AUTH, PUSH_METHOD, RESUME_METHOD
from schema.contracts.directory import END_TOPIC, INVALIDATION_TOPIC
from schema.contracts.router import DELIVERY_METHOD, delivery_topic

NEEDS = ("directory", "router", "storage")
"""Roles a gateway needs alive to be ready (/readyz)."""


class GatewayNode(Node):
    """A gateway."""

    role = "gateway"

    async def on_start(self) -> None:
        self.options = GatewayOptions.from_extra(self.cfg.extra)
        self.client_sock = self.new_socket(zmq.ROUTER)
        self.client_sock.setsockopt(
            zmq.MAXMSGSIZE, self.cfg.max_frame_bytes + timing.FRAME_SLACK_BYTES
        )
        self.client_sock.setsockopt(zmq.SNDHWM, timing.CLIENT_HWM_MESSAGES)
        self.client_sock.setsockopt(zmq.RCVHWM, timing.CLIENT_HWM_MESSAGES)
        self.security.client_server(self.client_sock)
        self.unauth = UnauthCount(self.options.max_unauth_per_addr, self.options.max_unauth_total)
        self.connections = Connections(
            self.client_sock, self.options, self.unauth, self._connection_closed
        )
        self.sessions = SessionTable(self._session_fd)
        self.backlogs = Backlogs(
            self.sessions,
            self.options.client_queue_bytes,
            self.connections.tcp_state,
            self._slow_reader,
        )
        self.user_rate = Limiter(self.options.session_rate, self.options.session_burst)
        self.conn_auth_rate = Limiter(
            timing.PRE_AUTH_PER_CONN_PER_S, timing.PRE_AUTH_PER_CONN_BURST
        )
        self.addr_auth_rate = Limiter(
            self.options.auth_per_addr_per_s, 10.0 * self.options.auth_per_addr_per_s
        )
        self.addr_resume_rate = Limiter(
            self.options.resume_per_addr_per_s, 10.0 * self.options.resume_per_addr_per_s
        )
        self.endpoints["client"] = self.bind_socket(self.client_sock, self.options.client_port)
        stats.watch(self.sessions, self.connections, self.unauth)
        self.clients = RpcServer(
            self.client_sock,
            self.node_id,
            self.cfg.max_frame_bytes,
            name="client",
            gate=self._gate,
            own_deadline_s=timing.CLIENT_REQUEST_TIMEOUT_S,
            on_sent=self.backlogs.sent,
        )
        self._unbinds: set[asyncio.Future[None]] = set()
        self.upstream = Upstream(self.membership, self.peers)
        self.binder = RouteBinder(self.node_id, self.sessions, self.upstream, self._sync_hint)
        auth = AuthCommands(
            self.node_id,
            self.sessions,
            self.upstream,
            self.binder,
            self.membership,
            self.options.max_sessions_per_user,
        )
        cmds = Social(self.node_id, self.sessions, self.upstream)
        self.access = AccessCache(self.upstream)
        self.batcher = SendBatcher(self.node_id, self.access, self.upstream)
        msgs = Messaging(self.node_id, self.sessions, self.upstream, self.access, self.batcher)
        handlers: dict[str, Handler] = {
            "Register": auth.register,
            "Login": auth.login,
            "Resume": auth.resume,
            "Logout": auth.logout,
            "Ping": auth.ping,
            "Me": auth.me,
            "OnlineUsers": cmds.online_users,
            "Friends": cmds.friends,
            "AddFriend": cmds.add_friend,
            "SearchUsers": cmds.search_users,
            "Groups": cmds.groups,
            "GroupCreate": cmds.group_create,
            "GroupSearch": cmds.group_search,
            "GroupJoin": cmds.group_join,
            "GroupLeave": cmds.group_leave,
            "GroupUsers": cmds.group_users,
            "GroupSettings": cmds.group_settings,
            "GroupInvite": cmds.group_invite,
            "RemoveFriend": cmds.remove_friend,
            "Block": cmds.block,
            "Unblock": cmds.unblock,
            "GroupKick": cmds.group_kick,
            "GroupOwner": cmds.group_owner,
            "ChangePassword": cmds.change_password,
            "DeleteAccount": cmds.delete_account,
            "Send": msgs.send,
            "Sync": msgs.sync,
            "History": msgs.history,
            "Delivered": msgs.delivered,
            "Read": msgs.read,
            "GroupReadCounts": msgs.group_read_counts,
            "Typing": TypingRelay(self.sessions, self.upstream, self.access).typing,
            "SearchMessages": MessageSearch(self.sessions, self.upstream).search_messages,
        }
        for name, handler in handlers.items():
            self.clients.register(CLIENT[name], handler)
        self.web: WebPlane | None = None
        if self.options.web_port is not None:
            self.web = WebPlane(
                self.options,
                self.unauth,
                self.cfg.host,
                self.cfg.advertise_host,
                self.cfg.max_frame_bytes,
                self.clients,
                self._connection_closed,
                self._slow_reader,
                lambda identity: self.sessions.get(identity) is not None,
                self._web_gateways,
            )
            self.clients.elsewhere = self.web.divert
            self.endpoints["web"] = await self.web.start()
        self.subscriber.on(delivery_topic(self.node_id), self._on_delivery)
        self.subscriber.on(INVALIDATION_TOPIC, self.access.on_invalidation)
        ender = SessionEnder(
            self.sessions, self.upstream, lambda i, n: self.end_session(i, n), self.node_id
        )
        self.subscriber.on(END_TOPIC, ender.on_event)
        self._gateway_tasks = [
            asyncio.ensure_future(self.clients.serve()),
            asyncio.ensure_future(self._expire_idle()),
            asyncio.ensure_future(ender.audit_forever(self.options.token_audit_s)),
            asyncio.ensure_future(
                Rebalancer(
                    self.node_id,
                    self.membership,
                    self.sessions,
                    self.push,
                    self.options.rebalance_grace_s,
                ).run()
            ),
        ]
        self.connections.start()
        self.backlogs.start()
        self.binder.start()

    async def ready(self) -> str | None:
        """A client's session needs a directory (login), a router (presence) and a storage
        node (messages) alive, and the router ring settled (no peer knows a node this one
        has not admitted yet)."""
        return readiness.missing_roles(self.membership, NEEDS) or readiness.unsettled(
            self.membership
        )

    async def on_stop(self) -> None:
        for task in self._gateway_tasks:
            task.cancel()
        await asyncio.gather(*self._gateway_tasks, return_exceptions=True)
        await self.connections.close()
        await self.backlogs.close()
        await self.clients.close()
        await self.batcher.close()
        going = client_pb2.Push(
            notice=client_pb2.Notice(
                kind=client_pb2.NOTICE_GOING_AWAY, text="gateway stopping; reconnect"
            )
        )
        self.push([s.identity for s in self.sessions], going.SerializeToString())
        if self.web is not None:
            await self.web.close()
        await self.binder.close()
        self.client_sock.close(linger=timing.SOCKET_LINGER_MS)

    # ---- hooks
    def load(self) -> float:
        return float(len(self.sessions))

    def session_count(self) -> int:
        return len(self.sessions)

    def client_key(self) -> str:
        return load_client_plane_public(self.cfg.keys_dir).decode()

    def on_drain(self) -> None:
        """Point every client at another gateway (round robin over the live ones serving its
        plane)."""
        others = accepting_gateways(self.membership)
        sessions = list(self.sessions)
        for i, session in enumerate(sessions):
            targets = serving(others, session)
            if targets:
                notice = redirect_notice(targets[i % len(targets)], "gateway draining")
            else:
                notice = client_pb2.Notice(
                    kind=client_pb2.NOTICE_GOING_AWAY, text="gateway draining; reconnect later"
                )
            self.push([session.identity], client_pb2.Push(notice=notice).SerializeToString())

    def peer_added(self, peer: Peer) -> None:
        if peer.role == "router":
            self.binder.ring_changed()

    def peer_removed(self, peer: Peer) -> None:
        if peer.role == "router":
            self.binder.ring_changed()
        elif peer.role == "storage":
            # it may have committed messages whose pushes never left: everyone syncs
            self._sync_hint(
                [s.identity for s in self.sessions], client_pb2.SYNC_REASON_STORAGE_CHANGED
            )

    def on_keys_revoked(self) -> None:
        """Every node rebinds its events PUB after a key revocation (within one reload period
        of this one): router deliveries published in that gap are lost. Once each live router
        has been heard after the gap, every client syncs."""
        task = asyncio.ensure_future(self._sync_after_rebinds(time.monotonic()))
        self._gateway_tasks.append(task)

    async def _sync_after_rebinds(self, noticed: float) -> None:
        settled = noticed + 2 * timing.KEYS_RELOAD_INTERVAL_S
        deadline = settled + timing.PEER_DEAD_AFTER_S
        while time.monotonic() < deadline and not all(
            p.last_beat > settled for p in self.membership.alive("router")
        ):
            await asyncio.sleep(timing.HEARTBEAT_INTERVAL_S / 4)  # polling the routers' beats
        self._sync_hint([s.identity for s in self.sessions], client_pb2.SYNC_REASON_ROUTE_CHANGED)

    # ---- sessions
    def end_session(
        self, identity: bytes, notice: client_pb2.Notice, slow_reader: bool = False
    ) -> None:
        """End a live session: push `notice` (why), forget the session, unbind it at its router,
        then close its connection (after timing.KICK_FLUSH_S, so the notice can leave first;
        a `slow_reader`'s at once, by a reset: it would not read the notice anyway)."""
        session = self.sessions.get(identity)
        if session is None:
            return
        self.push([identity], client_pb2.Push(notice=notice).SerializeToString())
        self.sessions.remove(identity)
        self._unbind_soon(session)
        fd = session.fd
        if fd == -1:
            return
        plane = self.connections if fd >= 0 or self.web is None else self.web
        if slow_reader:
            plane.shut(fd, "slow_reader", reset=True)
        else:
            asyncio.get_running_loop().call_later(
                timing.KICK_FLUSH_S, plane.shut, fd, "session_ended"
            )

    def _slow_reader(self, identity: bytes, unread: int) -> None:
        """`Backlogs` found this session's client too far behind: end it."""
        cap = self.options.client_queue_bytes
        self.end_session(
            identity,
            client_pb2.Notice(
                kind=client_pb2.NOTICE_SESSION_ENDED,
                text=f"session ended: {unread} bytes of replies and pushes left unread (the "
                f"gateway holds at most {cap}); resume and read what you ask for",
            ),
            slow_reader=True,
        )

    def _session_fd(self, fd: int, present: bool) -> None:
        """A session opened (`present`) or ended on the connection `fd`."""
        if fd < 0 and self.web is not None:
            self.web.authenticated(fd, present)
            return
        self.connections.authenticated(fd, present)
        if present:
            self.backlogs.opened(fd)

    def _connection_closed(self, fd: int) -> None:
        """A client's TCP connection (or WebSocket) closed: its session ends now (only Resume
        brings it back)."""
        session = self.sessions.on_fd(fd)
        if session is not None:
            self.sessions.remove(session.identity)
            self._unbind_soon(session)

    def _unbind_soon(self, session: Session) -> None:
        task = asyncio.ensure_future(self.binder.unbind(session))
        self._unbinds.add(task)
        task.add_done_callback(self._unbinds.discard)

    # ---- client plane
    def _gate(self, identity: bytes, method: Method, peer_key: bytes, peer_addr: str) -> int:
        now = time.monotonic()
        session = self.sessions.get(identity)
        name = method.name
        if session is None or session.peer_key != peer_key:  # no session on this connection
            if name not in PRE_AUTH:
                return pb.UNAUTHENTICATED
            if name in AUTHENTICATING and not (
                self.conn_auth_rate.allow(peer_key, now)
                and self._addr_rate(name).allow(peer_addr, now)
            ):
                return pb.RATE_LIMITED
            return pb.OK
        session.last_seen = now
        if name in AUTHENTICATING and not self.conn_auth_rate.allow(peer_key, now):
            return pb.RATE_LIMITED
        return pb.OK if self.user_rate.allow(session.user_id, now) else pb.RATE_LIMITED

    def _addr_rate(self, name: str) -> Limiter:
        """The per-address bucket of a session-opening method: Resume costs no password hash
        and comes in crowds (every client of a gateway that died, behind one NAT), so it has
        a bucket of its own."""
        return self.addr_resume_rate if name == RESUME_METHOD else self.addr_auth_rate

    def push(self, identities: list[bytes], push: bytes) -> None:
        """Send one serialized Push to each of these connections."""
        frames = envelope.event(PUSH_METHOD, push, self.node_id)
        out = [[i, *frames] for i in identities]
        if self.web is not None:
            out = self.web.divert(out)
        dropped = send_batch(self.client_sock, out)
        self.backlogs.sent(out)
        stats.pushed(len(out), dropped)
        if dropped:
            metrics.BAD_FRAMES.labels("client", "push_dropped").inc(dropped)

    def _sync_hint(
        self,
        identities: list[bytes],
        reason: client_pb2.SyncReason.ValueType = client_pb2.SYNC_REASON_ROUTE_CHANGED,
    ) -> None:
        hint = client_pb2.Push(sync_hint=client_pb2.SyncHint(reason=reason))
        self.push(identities, hint.SerializeToString())
        stats.SYNC_HINTS.inc(len(identities))

    def _on_delivery(self, topic: bytes, env: envelope.Envelope) -> None:
        if env.header.method != DELIVERY_METHOD:
            return
        delivery = envelope.parse_payload(cluster_pb2.GatewayDelivery, env.payload)
        out: list[list[bytes]] = []
        for item in delivery.items:
            frames = envelope.event(PUSH_METHOD, item.push, self.node_id)
            out.extend(
                [sid, *frames] for sid in item.session_ids if self.sessions.get(sid) is not None
            )
        if out and self.web is not None:
            out = self.web.divert(out)
        if out:
            dropped = send_batch(self.client_sock, out)
            self.backlogs.sent(out)
            stats.pushed(len(out), dropped)
            if dropped:
                metrics.BAD_FRAMES.labels("client", "push_dropped").inc(dropped)

    def _web_gateways(self) -> list[str]:
        """The WebSocket URLs of the other live gateways that are not draining."""
        return [
            p.info.endpoints["web"]
            for p in self.membership.alive("gateway")
            if not p.draining and "web" in p.info.endpoints and p.node_id != self.node_id
        ]

    async def _expire_idle(self) -> None:
        while True:
            await asyncio.sleep(timing.SESSION_SWEEP_INTERVAL_S)  # the idle sweep period
            for session in self.sessions.expire(time.monotonic()):
                await self.binder.unbind(session)
