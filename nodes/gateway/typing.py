"""Typing indicators: "alice is typing" passed to the other members of a conversation.

Role: the Typing handler of a gateway. The user comes from the session; the conversation must
be theirs (the access cache: friend or member), and a friend who blocked them hears nothing
(BLOCKED, as their sends get). The push goes through the routers to every session of the friend
(1:1) or of the other group members (their list from the directory), best effort, never
stored. Each session may send one every TYPING_MIN_INTERVAL_S; more are refused with
RATE_LIMITED (a client repeats it every few seconds while its user types).
Peer sockets: none of its own; directories and routers are reached through `Upstream`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.gateway.access import AccessCache
from nodes.gateway.sessions import SessionTable
from nodes.gateway.upstream import Upstream
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb

TYPING_MIN_INTERVAL_S = 1.0
MAX_TRACKED = 100_000
"""Sessions whose last typing time is remembered before the table starts over."""


class TypingRelay:
    """The Typing handler of one gateway."""

    def __init__(self, sessions: SessionTable, upstream: Upstream, access: AccessCache) -> None:
        self.sessions = sessions
        self.upstream = upstream
        self.access = access
        self._last: dict[bytes, float] = {}
        self._background: set[asyncio.Task[Any]] = set()

    async def typing(self, req: client_pb2.TypingRequest, call: Call) -> client_pb2.TypingReply:
        me = self.sessions.get(call.identity)
        if me is None:
            raise RpcError(pb.UNAUTHENTICATED, "log in first")
        if not req.conv_id:
            raise RpcError(pb.INVALID_ARGUMENT, "conv_id is required")
        now = time.monotonic()
        if now - self._last.get(me.identity, -TYPING_MIN_INTERVAL_S) < TYPING_MIN_INTERVAL_S:
            raise RpcError(pb.RATE_LIMITED, f"one typing notice per {TYPING_MIN_INTERVAL_S:g} s")
        if len(self._last) >= MAX_TRACKED:
            self._last.clear()
        self._last[me.identity] = now
        [access] = await self.access.check(
            [cluster_pb2.AccessCheck(user_id=me.user_id, conv_id=req.conv_id)]
        )
        if access.error != pb.OK:
            raise RpcError(access.error, "not a conversation of yours")
        if access.kind == client_pb2.CONV_KIND_DIRECT:  # as a send would be: not if blocked
            [direct] = await self.access.check(
                [cluster_pb2.AccessCheck(user_id=me.user_id, to_user=access.peer_id)]
            )
            if direct.error != pb.OK:
                raise RpcError(direct.error, "they do not take your messages")
        push = client_pb2.Push(
            typing=client_pb2.Typing(conv_id=req.conv_id, user_id=me.user_id, account=me.account)
        ).SerializeToString()
        task = asyncio.ensure_future(self._relay(access, me.user_id, push))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return client_pb2.TypingReply()

    async def _relay(self, access: cluster_pb2.AccessResult, me: int, push: bytes) -> None:
        if access.kind == client_pb2.CONV_KIND_GROUP:
            try:
                reply = await self.upstream.directory(
                    "GroupMembers", cluster_pb2.GroupIds(group_ids=[access.conv_id])
                )
            except RpcError:
                return  # best effort: the next notice tries again
            users = {u for g in reply.groups for u in g.user_ids}
        else:
            users = {access.peer_id}
        users.discard(me)
        if users:
            await self.upstream.deliver(users, push)
