"""The client's link to the cluster: one connection to some gateway that stays up.

Role: connect to a gateway with the pinned gateway key, send requests, receive pushes, ping,
follow a login redirect, and when the link dies reconnect with backoff and resume the session by
token: on the same gateway or any other one it knows of (the one it was started with, every
gateway a redirect named, and what the locator — discovery — lists), so a client given one
gateway still fails over. Every new token (a resume rotates it) goes to `on_token`, and a token
the cluster refuses ends the session there. One reconnect runs at a time;
every caller that finds the link down waits for it. The key never changes: every gateway of a
cluster holds the same one, so a locator gives endpoints only, every endpoint is dialed with the
pinned key (only its holder completes the Curve handshake, and nothing readable leaves before
that), and a redirect naming another key is not followed (it is logged and reported).
Peer sockets: one DEALER (Curve client with a fresh keypair) to a gateway's client ROUTER.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio
from google.protobuf.message import Message

from fabric import envelope, timing
from fabric.methods import RpcError
from fabric.retry import CALL, ONCE, RECONNECT, Policy
from fabric.rpc_client import RpcClient
from fabric.security import anonymous_client
from schema import client_pb2
from schema import common_pb2 as pb
from schema.contracts.client import CLIENT, PUSH_METHOD

log = logging.getLogger(__name__)
RESUME_TIMEOUT_S = 2.0
LINK_DOWN = frozenset({pb.TIMEOUT, pb.UNAVAILABLE})

Locator = Callable[[], list[str]]
"""Where the cluster's gateways may be: client endpoints, all dialed with the pinned key."""


class LinkState(enum.Enum):
    """Connection changes reported to the session."""

    DISCONNECTED = "disconnected"
    RECONNECTED = "reconnected"
    REDIRECTED = "redirected"
    REDIRECT_REFUSED = "redirect_refused"
    SESSION_ENDED = "session_ended"  # the cluster refused our token: log in again


class Link:
    """A connection that survives gateway restarts and moves."""

    def __init__(
        self,
        endpoint: str,
        server_key: bytes,
        *,
        device: str,
        timeout: float,
        ctx: zmq.asyncio.Context,
        locator: Locator | None,
        on_push: Callable[[client_pb2.Push], None],
        on_state: Callable[[LinkState, str], None],
        on_token: Callable[[str, str], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.seen: dict[str, None] = {endpoint: None}  # every gateway endpoint known to work
        self.server_key = server_key  # the pinned key: never replaced
        self.device = device
        self.timeout = timeout
        self.ctx = ctx
        self.locator = locator
        self.on_push = on_push
        self.on_state = on_state
        self.on_token = on_token
        self.user: client_pb2.LoginReply | None = None
        self.token = ""
        self.closed = False
        self._rpc: RpcClient | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._redirected = False
        self._watch: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Open the socket to the current gateway (no round trip yet)."""
        key = self.server_key
        self._rpc = RpcClient(
            self.ctx,
            self.endpoint,
            name="soim_client",
            max_bytes=timing.CLIENT_REPLY_MAX_BYTES,
            secure=lambda sock: anonymous_client(sock, key),
            on_event=self._on_event,
        )
        self._rpc.start()
        self._watch = asyncio.ensure_future(self._watch_link(self._rpc))

    async def _watch_link(self, rpc: RpcClient) -> None:
        """Recover as soon as the TCP link to the gateway drops (a killed or restarted
        gateway), instead of waiting for the next keepalive."""
        monitor = rpc.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            await monitor.recv_multipart()
            if (
                self._rpc is rpc
                and self.token
                and not self.closed
                and (self._reconnect is None or self._reconnect.done())
            ):
                self._reconnect = asyncio.ensure_future(self._reconnect_loop())
        finally:
            with contextlib.suppress(zmq.ZMQError):
                rpc.sock.disable_monitor()
            monitor.close(linger=0)

    async def close(self, logout: bool = True) -> None:
        """Log out if logged in (and `logout`) and close the socket."""
        self.closed = True
        for task in (self._keepalive, self._reconnect):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._rpc is not None and self.user is not None and logout:
            with contextlib.suppress(RpcError):
                await self._rpc.call(CLIENT["Logout"], client_pb2.LogoutRequest(), timeout=1.0)
        await self._drop()

    async def call(
        self, name: str, request: Message, timeout: float | None = None, retry: Policy = CALL
    ) -> Any:
        """client.<name> on the current gateway, an idempotent one asked again by `retry`
        (`ONCE` when the caller retries it); RpcError carries the gateway's code."""
        if self._rpc is None:
            raise RpcError(pb.UNAVAILABLE, "not connected")
        return await self._rpc.call(CLIENT[name], request, timeout or self.timeout, retry=retry)

    async def authenticate(self, name: str, request: Message) -> client_pb2.LoginReply:
        """Register, Login or Resume; follow a redirect; keep the link alive from then on."""
        reply: client_pb2.LoginReply = await self.call(name, request)
        self._started(reply)
        if reply.redirect.endpoint and self._may_follow(reply.redirect):
            target = reply.redirect
            # no Logout here: it would revoke the token the target is about to resume
            await self._drop()
            self.endpoint = target.endpoint
            self.seen[target.endpoint] = None
            self.open()
            reply = await self.call(
                "Resume", client_pb2.ResumeRequest(token=self.token, device=self.device)
            )
            self._started(reply)
            self.on_state(LinkState.REDIRECTED, self.endpoint)
        if self._keepalive is None or self._keepalive.done():
            self._keepalive = asyncio.ensure_future(self._keep_alive())
        return reply

    def _started(self, reply: client_pb2.LoginReply) -> None:
        """A login, register or resume succeeded: its token is the one to resume with."""
        self.user, self.token = reply, reply.token
        if self.on_token is not None:
            self.on_token(reply.account, reply.token)

    def renewed(self, token: str, expires_ms: int) -> None:
        """This session's token was replaced (a password change): resume with the new one."""
        if self.user is not None:
            self.user.token, self.user.token_expires_ms = token, expires_ms
            self._started(self.user)

    def forget(self) -> None:
        """After a logout (or a refused token): no session to resume, no keepalive."""
        if self.user is not None and self.on_token is not None:
            self.on_token(self.user.account, "")
        self.user, self.token = None, ""
        if self._keepalive is not None:
            self._keepalive.cancel()

    async def move(self, target: client_pb2.Redirect) -> None:
        """The gateway sent us elsewhere (it is draining): resume there, if it has our key."""
        if not self._may_follow(target):
            return
        self.endpoint = target.endpoint
        self.seen[target.endpoint] = None
        self._redirected = True
        await self.recover()

    def _may_follow(self, target: client_pb2.Redirect) -> bool:
        """A redirect is followed only to a gateway that names the pinned key."""
        if target.server_key.encode() == self.server_key:
            return True
        log.warning(
            "not following a redirect to %s: it names key %r, not the pinned key %r",
            target.endpoint,
            target.server_key,
            self.server_key.decode(),
        )
        self.on_state(
            LinkState.REDIRECT_REFUSED, f"{target.endpoint} names key {target.server_key or '-'}"
        )
        return False

    async def recover(self) -> None:
        """The link looks dead (or the gateway forgot us): reconnect and resume, once. If the
        cluster refuses the token the session is over: `token` is empty after this."""
        if self.closed or not self.token:
            return
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.ensure_future(self._reconnect_loop())
        await asyncio.shield(self._reconnect)

    async def _reconnect_loop(self) -> None:
        moved, self._redirected = self._redirected, False
        if not moved:
            self.on_state(LinkState.DISCONNECTED, self.endpoint)
        attempt = 0
        first = self.endpoint
        while not self.closed:
            located = self.locator() if self.locator is not None else []
            candidates = list(dict.fromkeys([first, *self.seen, *located]))
            self.endpoint = candidates[attempt % len(candidates)]
            attempt += 1
            await self._drop()
            self.open()
            try:
                reply = await self.call(  # asked once: this loop is its retry
                    "Resume",
                    client_pb2.ResumeRequest(token=self.token, device=self.device),
                    timeout=RESUME_TIMEOUT_S,
                    retry=ONCE,
                )
            except RpcError as err:
                if err.code not in RECONNECT.retriable:  # e.g. revoked: the session is over
                    log.warning("resume refused on %s: %s", self.endpoint, err)
                    self.forget()
                    self.on_state(LinkState.SESSION_ENDED, err.detail or str(err))
                    return
                await asyncio.sleep(RECONNECT.pause(attempt, err.code))  # reconnect backoff
                continue
            self._started(reply)
            self.seen[self.endpoint] = None
            self.on_state(LinkState.REDIRECTED if moved else LinkState.RECONNECTED, self.endpoint)
            return

    async def _keep_alive(self) -> None:
        while not self.closed:
            await asyncio.sleep(timing.CLIENT_PING_INTERVAL_S)  # the ping period
            try:  # Me also tells whether the gateway still knows our session; asked once:
                # a failure reconnects, and the reconnect is the retry
                await self.call("Me", client_pb2.MeRequest(), timeout=RESUME_TIMEOUT_S, retry=ONCE)
            except RpcError as err:
                if err.code in LINK_DOWN or err.code == pb.UNAUTHENTICATED:
                    await self.recover()

    def _on_event(self, env: envelope.Envelope) -> None:
        if env.header.method != PUSH_METHOD:
            return
        try:
            push = envelope.parse_payload(client_pb2.Push, env.payload)
        except envelope.EnvelopeError:
            log.warning("dropped an unparsable push")
            return
        self.on_push(push)

    async def _drop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        if self._rpc is not None:
            await self._rpc.close()
            self._rpc = None
