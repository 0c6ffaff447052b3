"""Client commands about messages: Send, Sync, History, Delivered, Read, GroupReadCounts.

Role: validate each request, take the user from the session, check access (friend, member,
party to the conversation) through the access cache, and hand the work to the storage node
owning the conversation. A group member whose history starts at their join (the access
answer's floor_seq) gets no message, and no read count, of a seq at or below that floor.
Sends go through the `SendBatcher`.
Peer sockets: none of its own; directories and storage nodes are reached through `AccessCache`
and `Upstream`.
"""

from __future__ import annotations

import itertools
from typing import Any

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.gateway.access import AccessCache
from nodes.gateway.send_batcher import SendBatcher
from nodes.gateway.sessions import Session, SessionTable
from nodes.gateway.upstream import Upstream
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.client import HISTORY_DEFAULT, HISTORY_MAX
from schema.contracts.message import MAX_BODY_CHARS, MAX_CLIENT_MSG_ID_CHARS, MAX_MENTIONS

_KINDS = frozenset(client_pb2.MessageKind.values())
"""The message kinds a Send may carry (a set made once, not a list per Send)."""


class Messaging:
    """Message handlers of one gateway."""

    def __init__(
        self,
        gateway_id: str,
        sessions: SessionTable,
        upstream: Upstream,
        access: AccessCache,
        batcher: SendBatcher,
    ) -> None:
        self.gateway_id = gateway_id
        self.sessions = sessions
        self.upstream = upstream
        self.access = access
        self.batcher = batcher
        self._turn = itertools.count()

    def _me(self, call: Call) -> Session:
        session = self.sessions.get(call.identity)
        if session is None:
            raise RpcError(pb.UNAUTHENTICATED, "log in first")
        return session

    def send(self, req: client_pb2.SendRequest, call: Call) -> Any:
        me = self._me(call)
        if req.kind == client_pb2.MESSAGE_KIND_RECALL:
            if req.body:
                raise RpcError(pb.INVALID_ARGUMENT, "a recall has no text")
        elif not req.body.strip():
            raise RpcError(pb.EMPTY_BODY, "a message needs text")
        if req.kind not in _KINDS or (req.kind != client_pb2.MESSAGE_KIND_TEXT and not req.ref_seq):
            raise RpcError(pb.INVALID_ARGUMENT, "an edit or recall needs the seq it changes")
        if (
            len(req.mentions) > MAX_MENTIONS
            or not all(req.mentions)
            or (req.mentions and req.WhichOneof("to") != "to_group")
        ):
            raise RpcError(
                pb.INVALID_ARGUMENT,
                f"mentions: at most {MAX_MENTIONS} user ids, in a group message",
            )
        if len(req.body) > MAX_BODY_CHARS:
            raise RpcError(pb.BODY_TOO_LONG, f"at most {MAX_BODY_CHARS} characters")
        if not 0 < len(req.client_msg_id) <= MAX_CLIENT_MSG_ID_CHARS:
            raise RpcError(
                pb.INVALID_ARGUMENT, f"client_msg_id: 1-{MAX_CLIENT_MSG_ID_CHARS} characters"
            )
        which = req.WhichOneof("to")
        if which is None or not getattr(req, which):
            raise RpcError(pb.INVALID_ARGUMENT, "send needs a user or a group")
        return self.batcher.submit(me, req)

    async def _conversation(self, me: Session, conv_id: int) -> cluster_pb2.AccessResult:
        if not conv_id:
            raise RpcError(pb.INVALID_ARGUMENT, "conv_id is required")
        [result] = await self.access.check(
            [cluster_pb2.AccessCheck(user_id=me.user_id, conv_id=conv_id)]
        )
        if result.error != pb.OK:
            raise RpcError(result.error, "not a conversation of yours")
        return result

    async def sync(self, req: client_pb2.SyncRequest, call: Call) -> client_pb2.SyncReply:
        me = self._me(call)
        mine = await self.upstream.directory(
            "Conversations", cluster_pb2.UserRef(user_id=me.user_id)
        )
        wanted = set(req.conv_ids)
        convs = [c for c in mine.conversations if not wanted or c.conv_id in wanted]
        if not convs:
            return client_pb2.SyncReply()
        live = self.upstream.storage_ring()
        if not live:
            raise RpcError(pb.UNAVAILABLE, "no storage node is alive")
        members = sorted(live.members)
        node = members[next(self._turn) % len(members)]
        return await self.upstream.storage(
            node, "Sync", cluster_pb2.StoreSyncRequest(user_id=me.user_id, conversations=convs)
        )

    async def history(self, req: client_pb2.HistoryRequest, call: Call) -> client_pb2.HistoryReply:
        me = self._me(call)
        if req.limit > HISTORY_MAX:
            raise RpcError(pb.INVALID_ARGUMENT, f"limit: at most {HISTORY_MAX}")
        floor = (await self._conversation(me, req.conv_id)).floor_seq
        request = client_pb2.HistoryRequest()
        request.CopyFrom(req)
        request.limit = req.limit or HISTORY_DEFAULT
        if floor and request.WhichOneof("position") == "after_seq":
            request.after_seq = max(request.after_seq, floor)
        reply = await self.upstream.storage(
            self.upstream.storage_owner(req.conv_id), "History", request
        )
        if floor and reply.messages and reply.messages[0].seq <= floor + 1:
            # the page reaches back to the member's join: hide what lies before, and say so
            kept = [m for m in reply.messages if m.seq > floor]
            del reply.messages[:]
            reply.messages.extend(kept)
            reply.more = False
        return reply

    async def delivered(
        self, req: client_pb2.DeliveredRequest, call: Call
    ) -> client_pb2.DeliveredReply:
        result = await self._cursor(call, req.conv_id, delivered=req.seq)
        return client_pb2.DeliveredReply(delivered_seq=result.delivered_seq)

    async def read(self, req: client_pb2.ReadRequest, call: Call) -> client_pb2.ReadReply:
        result = await self._cursor(call, req.conv_id, read=req.seq)
        return client_pb2.ReadReply(read_seq=result.read_seq)

    async def _cursor(
        self, call: Call, conv_id: int, delivered: int = 0, read: int = 0
    ) -> cluster_pb2.CursorResult:
        me = self._me(call)
        if not (delivered or read):
            raise RpcError(pb.INVALID_ARGUMENT, "seq is required")
        access = await self._conversation(me, conv_id)
        peer = access.peer_id if access.kind == client_pb2.CONV_KIND_DIRECT else 0
        update = cluster_pb2.CursorUpdate(
            origin=cluster_pb2.ClientRequestRef(session_id=me.identity),
            user_id=me.user_id,
            conv_id=conv_id,
            peer_id=peer,
            delivered_seq=delivered,
            read_seq=read,
        )
        reply = await self.upstream.storage(
            self.upstream.storage_owner(conv_id),
            "Cursors",
            cluster_pb2.CursorBatchRequest(gateway_id=self.gateway_id, updates=[update]),
        )
        [result] = reply.results
        if result.error != pb.OK:
            raise RpcError(result.error, "")
        return result

    async def group_read_counts(
        self, req: client_pb2.GroupReadCountsRequest, call: Call
    ) -> client_pb2.GroupReadCountsReply:
        me = self._me(call)
        access = await self._conversation(me, req.conv_id)
        if access.kind != client_pb2.CONV_KIND_GROUP:
            raise RpcError(pb.INVALID_ARGUMENT, "read counts are for group conversations")
        if not 0 < req.from_seq <= req.to_seq or req.to_seq - req.from_seq >= 100:
            raise RpcError(pb.INVALID_ARGUMENT, "from_seq..to_seq: 1 to 100 seqs")
        if req.to_seq <= access.floor_seq:  # all before the member joined: none to count
            return client_pb2.GroupReadCountsReply(conv_id=req.conv_id)
        request = client_pb2.GroupReadCountsRequest()
        request.CopyFrom(req)
        request.from_seq = max(req.from_seq, access.floor_seq + 1)
        return await self.upstream.storage(
            self.upstream.storage_owner(req.conv_id), "GroupReadCounts", request
        )
