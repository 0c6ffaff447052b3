"""The client session: everything a so-im client says to a gateway, with no rendering.

Role: connect to a gateway with its Curve key, log in or register (following a redirect to a
less loaded gateway), ping, notice a dead link and reconnect with backoff and resume by token,
and offer one method per command. Pushes and connection changes arrive on `events`.
Peer sockets: one DEALER (Curve client with a fresh keypair) to a gateway's client ROUTER.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from dataclasses import dataclass
from typing import Any

import zmq.asyncio
from google.protobuf.message import Message

from fabric import envelope, timing
from fabric.methods import RpcError
from fabric.rpc_client import RpcClient
from fabric.security import anonymous_client
from nodes.gateway.api import CLIENT, PUSH_METHOD
from schema import client_pb2
from schema import common_pb2 as pb

log = logging.getLogger(__name__)
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0
_LINK_DOWN = frozenset({pb.TIMEOUT, pb.UNAVAILABLE})


class EventKind(enum.Enum):
    """What happened, as seen by the client."""

    PUSH = "push"                  # the gateway pushed something (message, notice, ...)
    DISCONNECTED = "disconnected"  # the link died; reconnecting
    RECONNECTED = "reconnected"    # resumed on a gateway; fetch what may have been missed
    REDIRECTED = "redirected"      # moved to a less loaded gateway at login


@dataclass(frozen=True)
class ClientEvent:
    """One item of `ClientSession.events`."""

    kind: EventKind
    push: client_pb2.Push | None = None
    endpoint: str = ""


class ClientSession:
    """One user's connection to the cluster. `await connect()`, then log in."""

    def __init__(self, endpoint: str, server_key: bytes, *, device: str = "soim",
                 timeout: float = timing.CLIENT_REQUEST_TIMEOUT_S,
                 ctx: zmq.asyncio.Context | None = None) -> None:
        self.endpoint = endpoint
        self.server_key = server_key
        self.device = device
        self.timeout = timeout
        self._own_ctx = ctx is None
        self.ctx = ctx if ctx is not None else zmq.asyncio.Context()
        self.events: asyncio.Queue[ClientEvent] = asyncio.Queue()
        self.user: client_pb2.LoginReply | None = None
        self.token = ""
        self._rpc: RpcClient | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False

    # ---- connection
    async def connect(self) -> None:
        """Open the link to the current gateway (no round trip yet)."""
        key = self.server_key
        self._rpc = RpcClient(self.ctx, self.endpoint, name="soim_client",
                              secure=lambda sock: anonymous_client(sock, key),
                              on_event=self._on_event)
        self._rpc.start()

    async def close(self) -> None:
        """Log out if logged in, and close everything."""
        self._closed = True
        for task in (self._keepalive, self._reconnecting):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._rpc is not None and self.user is not None:
            with contextlib.suppress(RpcError):
                await self._rpc.call(CLIENT["Logout"], client_pb2.LogoutRequest(), timeout=1.0)
        await self._drop_link()
        if self._own_ctx:
            self.ctx.destroy(linger=0)

    async def call(self, name: str, request: Message, timeout: float | None = None) -> Any:
        """Send client.<name>; return the reply or raise RpcError with the gateway's code."""
        if self._rpc is None:
            raise RpcError(pb.UNAVAILABLE, "not connected")
        return await self._rpc.call(CLIENT[name], request, timeout or self.timeout)

    # ---- session commands
    async def register(self, account: str, password: str,
                       nickname: str = "") -> client_pb2.LoginReply:
        reply = await self.call("Register", client_pb2.RegisterRequest(
            account=account, password=password, device=self.device, nickname=nickname))
        return await self._logged_in(reply)

    async def login(self, account: str, password: str) -> client_pb2.LoginReply:
        reply = await self.call("Login", client_pb2.LoginRequest(
            account=account, password=password, device=self.device))
        return await self._logged_in(reply)

    async def resume(self, token: str) -> client_pb2.LoginReply:
        reply = await self.call("Resume", client_pb2.ResumeRequest(token=token,
                                                                   device=self.device))
        return await self._logged_in(reply)

    async def logout(self) -> None:
        await self.call("Logout", client_pb2.LogoutRequest())
        self.user, self.token = None, ""
        if self._keepalive is not None:
            self._keepalive.cancel()

    async def ping(self) -> client_pb2.PingReply:
        return await self.call("Ping", client_pb2.PingRequest(
            client_time_ms=int(time.time() * 1000)))

    # ---- the so-im command set
    async def me(self) -> client_pb2.MeReply:
        return await self.call("Me", client_pb2.MeRequest())

    async def online_users(self, cursor: int = 0, limit: int = 50) -> client_pb2.OnlineUsersReply:
        return await self.call("OnlineUsers",
                               client_pb2.OnlineUsersRequest(cursor=cursor, limit=limit))

    async def friends(self) -> client_pb2.FriendsReply:
        return await self.call("Friends", client_pb2.FriendsRequest())

    async def add_friend(self, user_id: int) -> client_pb2.AddFriendReply:
        return await self.call("AddFriend", client_pb2.AddFriendRequest(user_id=user_id))

    async def search_users(self, prefix: str) -> client_pb2.SearchUsersReply:
        return await self.call("SearchUsers", client_pb2.SearchUsersRequest(prefix=prefix))

    async def groups(self) -> client_pb2.GroupsReply:
        return await self.call("Groups", client_pb2.GroupsRequest())

    async def group_create(self, name: str, user_limit: int = 0) -> client_pb2.GroupCreateReply:
        return await self.call("GroupCreate",
                               client_pb2.GroupCreateRequest(name=name, user_limit=user_limit))

    async def group_search(self, prefix: str) -> client_pb2.GroupSearchReply:
        return await self.call("GroupSearch", client_pb2.GroupSearchRequest(prefix=prefix))

    async def group_join(self, group_id: int) -> client_pb2.GroupJoinReply:
        return await self.call("GroupJoin", client_pb2.GroupJoinRequest(group_id=group_id))

    async def group_leave(self, group_id: int) -> client_pb2.GroupLeaveReply:
        return await self.call("GroupLeave", client_pb2.GroupLeaveRequest(group_id=group_id))

    async def group_users(self, group_id: int) -> client_pb2.GroupUsersReply:
        return await self.call("GroupUsers", client_pb2.GroupUsersRequest(group_id=group_id))

    # ---- internals
    async def _logged_in(self, reply: client_pb2.LoginReply) -> client_pb2.LoginReply:
        self.user, self.token = reply, reply.token
        if reply.redirect.endpoint:
            target = reply.redirect
            with contextlib.suppress(RpcError):
                await self.call("Logout", client_pb2.LogoutRequest(), timeout=1.0)
            await self._drop_link()
            self.endpoint, self.server_key = target.endpoint, target.server_key.encode()
            await self.connect()
            resumed = await self.call("Resume", client_pb2.ResumeRequest(
                token=self.token, device=self.device))
            self.user, self.token = resumed, resumed.token
            self.events.put_nowait(ClientEvent(EventKind.REDIRECTED, endpoint=self.endpoint))
        if self._keepalive is None or self._keepalive.done():
            self._keepalive = asyncio.ensure_future(self._keep_alive())
        return self.user

    def _on_event(self, env: envelope.Envelope) -> None:
        if env.header.method != PUSH_METHOD:
            return
        try:
            push = envelope.parse_payload(client_pb2.Push, env.payload)
        except envelope.EnvelopeError:
            log.warning("dropped an unparsable push")
            return
        self.events.put_nowait(ClientEvent(EventKind.PUSH, push=push))

    async def _keep_alive(self) -> None:
        while not self._closed:
            await asyncio.sleep(timing.CLIENT_PING_INTERVAL_S)  # the ping period
            try:
                await self.ping()
            except RpcError as err:
                if err.code in _LINK_DOWN or err.code == pb.UNAUTHENTICATED:
                    await self.reconnect()

    async def reconnect(self) -> None:
        """Re-open the link with backoff and resume the session by token."""
        self.events.put_nowait(ClientEvent(EventKind.DISCONNECTED, endpoint=self.endpoint))
        pause = RECONNECT_FIRST_S
        while not self._closed:
            await self._drop_link()
            await self.connect()
            try:
                reply = await self.call("Resume", client_pb2.ResumeRequest(
                    token=self.token, device=self.device), timeout=2.0)
            except RpcError as err:
                if err.code not in _LINK_DOWN:
                    raise
                await asyncio.sleep(pause)  # reconnect backoff
                pause = min(pause * 2, RECONNECT_MAX_S)
                continue
            self.user, self.token = reply, reply.token
            self.events.put_nowait(ClientEvent(EventKind.RECONNECTED, endpoint=self.endpoint))
            return

    async def _drop_link(self) -> None:
        if self._rpc is not None:
            await self._rpc.close()
            self._rpc = None
