"""Client commands that open, resume and close sessions: Register, Login, Resume, Logout, Ping, Me.

Role: the gateway side of authentication — the directory checks the password or token (one
VerifyTokens call carries every resume that arrived while the previous one was out), this module
creates the session (the only source of the user id from then on), binds it at the owning
router, and may point the client at a clearly less loaded gateway (`redirect`).
Peer sockets: none of its own; directories and routers are reached through `Upstream` and
`RouteBinder`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from fabric import timing
from fabric.membership import Membership
from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.gateway.binding import RouteBinder
from nodes.gateway.rebalance import redirect_to
from nodes.gateway.sessions import Session, SessionTable
from nodes.gateway.upstream import Batched, Upstream
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import MAX_TOKENS_PER_CALL

MAX_DEVICE_CHARS = 32
"""Resumes verified in one Directory.VerifyTokens (the directory's limit)."""


def _device(name: str) -> str:
    if not name:
        return "default"
    if len(name) > MAX_DEVICE_CHARS or not name.isprintable():
        raise RpcError(pb.INVALID_ARGUMENT, f"device: 1-{MAX_DEVICE_CHARS} printable characters")
    return name


class AuthCommands:
    """Session-opening handlers of one gateway."""

    def __init__(
        self,
        node_id: str,
        sessions: SessionTable,
        upstream: Upstream,
        binder: RouteBinder,
        membership: Membership,
        max_sessions_per_user: int,
    ) -> None:
        self.node_id = node_id
        self.max_sessions_per_user = max_sessions_per_user
        self.sessions = sessions
        self.upstream = upstream
        self.binder = binder
        self.membership = membership
        self._seen: dict[int, int] = {}
        self._toucher: asyncio.Task[None] | None = None
        self._tokens: Batched[str, cluster_pb2.DirTokenResult] = Batched(
            self._verify_tokens, MAX_TOKENS_PER_CALL
        )

    async def register(self, req: client_pb2.RegisterRequest, call: Call) -> client_pb2.LoginReply:
        device = _device(req.device)
        auth = await self.upstream.directory(
            "Register",
            cluster_pb2.DirRegisterRequest(
                account=req.account,
                password=req.password,
                nickname=req.nickname,
                client_addr=call.peer_addr,
            ),
        )
        return await self._open(call, auth, device, may_redirect=True)

    async def login(self, req: client_pb2.LoginRequest, call: Call) -> client_pb2.LoginReply:
        device = _device(req.device)
        auth = await self.upstream.directory(
            "Login",
            cluster_pb2.DirLoginRequest(
                account=req.account, password=req.password, client_addr=call.peer_addr
            ),
        )
        return await self._open(call, auth, device, may_redirect=True)

    async def resume(self, req: client_pb2.ResumeRequest, call: Call) -> client_pb2.LoginReply:
        device = _device(req.device)
        result = await self._tokens.submit(req.token)
        if result.code != pb.OK:
            raise RpcError(result.code, result.detail)
        return await self._open(call, result.auth, device, may_redirect=False)

    async def _verify_tokens(self, tokens: list[str]) -> list[cluster_pb2.DirTokenResult]:
        """One Directory.VerifyTokens for the resumes of a pass (see `Batched`)."""
        reply = await self.upstream.directory(
            "VerifyTokens",
            cluster_pb2.DirTokensRequest(
                tokens=[cluster_pb2.DirTokenRequest(token=t) for t in tokens]
            ),
        )
        return list(reply.results)

    async def logout(self, req: client_pb2.LogoutRequest, call: Call) -> client_pb2.LogoutReply:
        """Revoke the session's token at a directory (it stops working on every gateway), then
        drop the session. If the directory cannot be reached the error is the answer and the
        session stays, so the client can retry."""
        session = self.sessions.get(call.identity)
        if session is None:
            return client_pb2.LogoutReply()
        await self.upstream.directory(
            "RevokeToken", cluster_pb2.DirTokenRequest(token=session.token)
        )
        if self.sessions.remove(call.identity) is session:
            await self.binder.unbind(session)
            self._touch(session.user_id)
        return client_pb2.LogoutReply()

    def ping(self, req: client_pb2.PingRequest, call: Call) -> client_pb2.PingReply:
        return client_pb2.PingReply(
            client_time_ms=req.client_time_ms, server_time_ms=int(time.time() * 1000)
        )

    def me(self, req: client_pb2.MeRequest, call: Call) -> client_pb2.MeReply:
        s = self.sessions.get(call.identity)
        assert s is not None  # the gate admits only sessions here
        return client_pb2.MeReply(
            user_id=s.user_id,
            account=s.account,
            nickname=s.nickname,
            device=s.device,
            gateway=self.node_id,
        )

    async def _open(
        self, call: Call, auth: cluster_pb2.DirAuthReply, device: str, may_redirect: bool
    ) -> client_pb2.LoginReply:
        user = auth.user
        others = [s for s in self.sessions.of_user(user.user_id) if s.identity != call.identity]
        if len(others) >= self.max_sessions_per_user:
            raise RpcError(
                pb.RATE_LIMITED,
                f"at most {self.max_sessions_per_user} sessions "
                "per user on a gateway; log out of another first",
            )
        session = Session(
            identity=call.identity,
            peer_key=call.peer_key,
            user_id=user.user_id,
            account=user.account,
            nickname=user.nickname,
            device=device,
            token=auth.token,
            token_expires_ms=auth.token_expires_ms,
            fd=call.peer_fd,
        )
        replaced = self.sessions.add(session)
        if replaced is not None:
            await self.binder.unbind(replaced)
        await self.binder.bind(session)
        self._touch(user.user_id)
        reply = client_pb2.LoginReply(
            user_id=user.user_id,
            account=user.account,
            nickname=user.nickname,
            token=auth.token,
            token_expires_ms=auth.token_expires_ms,
        )
        if may_redirect:
            target = self.redirect_target()
            if target is not None:
                reply.redirect.CopyFrom(target)
        return reply

    def redirect_target(self) -> client_pb2.Redirect | None:
        """A gateway with clearly fewer sessions than this one, if there is one."""
        mine = len(self.sessions)
        best = min(
            (p for p in self.membership.alive("gateway") if not p.draining),
            key=lambda p: p.sessions,
            default=None,
        )
        if best is None or "client" not in best.info.endpoints:
            return None
        if (
            best.sessions + timing.REDIRECT_MARGIN_SESSIONS <= mine
            and best.sessions <= timing.REDIRECT_RATIO * mine
        ):
            return redirect_to(best)
        return None

    def _touch(self, user_id: int) -> None:
        """Record the user's last activity at a directory, in the background. One Touch is in
        flight at a time; it carries every user touched while the previous one was out."""
        self._seen[user_id] = int(time.time() * 1000)
        if self._toucher is None or self._toucher.done():
            self._toucher = asyncio.ensure_future(self._send_touches())

    async def _send_touches(self) -> None:
        while self._seen:
            seen, self._seen = self._seen, {}
            request = cluster_pb2.TouchRequest(
                seen=[cluster_pb2.UserSeen(user_id=u, ts_ms=ms) for u, ms in seen.items()]
            )
            with contextlib.suppress(RpcError):  # a lost Touch only makes "last active" older
                await self.upstream.directory("Touch", request)
