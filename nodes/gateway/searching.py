"""Client command SearchMessages: search the messages of the user's own conversations.

Role: take the user from the session, ask a directory for the conversations they may read now
(Directory.Conversations: their friends' and groups', each group with the member's history
floor), split them by the storage node owning each on the ring, ask those nodes concurrently
(Storage.Search, up to MAX_SCOPES conversations a call), merge the pages newest first by
(ts_ms, msg_id), and fill in each message's recipient. A page is exact: each node answers one
result more than asked, so `more` says whether older results remain.
Peer sockets: none of its own; directories and storage nodes are reached through `Upstream`.
"""

from __future__ import annotations

import asyncio

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.gateway.sessions import SessionTable
from nodes.gateway.upstream import Upstream
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.client import SEARCH_DEFAULT, check_search
from schema.contracts.storage import MAX_SCOPES


class MessageSearch:
    """The SearchMessages handler of one gateway."""

    def __init__(self, sessions: SessionTable, upstream: Upstream) -> None:
        self.sessions = sessions
        self.upstream = upstream

    async def search_messages(
        self, req: client_pb2.SearchMessagesRequest, call: Call
    ) -> client_pb2.SearchMessagesReply:
        session = self.sessions.get(call.identity)
        if session is None:
            raise RpcError(pb.UNAUTHENTICATED, "log in first")
        check_search(req)
        mine = await self.upstream.directory(
            "Conversations", cluster_pb2.UserRef(user_id=session.user_id)
        )
        convs = {c.conv_id: c for c in mine.conversations}
        owners: dict[str, list[cluster_pb2.SearchScope]] = {}
        for c in convs.values():
            scope = cluster_pb2.SearchScope(conv_id=c.conv_id, floor_seq=c.floor_seq)
            owners.setdefault(self.upstream.storage_owner(c.conv_id), []).append(scope)
        search = client_pb2.SearchMessagesRequest()
        search.CopyFrom(req)
        search.limit = limit = req.limit or SEARCH_DEFAULT
        calls = [
            self.upstream.storage(
                node,
                "Search",
                cluster_pb2.StoreSearchRequest(search=search, scopes=scopes[i : i + MAX_SCOPES]),
            )
            for node, scopes in owners.items()
            for i in range(0, len(scopes), MAX_SCOPES)
        ]
        pages = await asyncio.gather(*calls)
        found = sorted(
            (m for page in pages for m in page.messages),
            key=lambda m: (m.ts_ms, m.msg_id),
            reverse=True,
        )
        reply = client_pb2.SearchMessagesReply(
            more=len(found) > limit or any(page.more for page in pages)
        )
        for msg in found[:limit]:
            conv = convs[msg.conv_id]
            if conv.kind == client_pb2.CONV_KIND_GROUP:
                msg.to_group = conv.peer_id
            else:
                msg.to_user = conv.peer_id if msg.sender == session.user_id else session.user_id
            reply.messages.append(msg)
        return reply
