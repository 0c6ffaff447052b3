"""History, Sync and GroupReadCounts: answers read from the message and cursor tables.

Role: the read side of the storage node. Every answer comes from the database (any storage
node can give it; a row is only acked once committed, so an acked message is always visible),
on the read pool of `Workers`; the gateway has checked access. History pages one conversation
in ascending seq order with sender accounts and recipients filled in from `People`, cut to
what a `soim` client takes in one frame (PAGE_MAX_BYTES: the messages nearest the requested
position stay, `more` says the rest lies beyond; 100 messages of 4,000 characters can take
1.6 MB, which a gateway would hold and queue for nothing). Sync fills
last_seq, the user's read and delivered cursors, unread (last_seq - read_seq) and, for a direct
conversation, the friend's cursors; a group member's cursors count from its history floor
(Conversation.floor_seq, from the directory), so what came before the join is not unread.
GroupReadCounts counts, per stored seq of a range, the
members other than its author whose cursors reached it.
No sockets: requests arrive on the node's RPC ROUTER; directories are asked through `People`.
"""

from __future__ import annotations

from fabric import timing
from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.storage import queries
from nodes.storage.fanout import chat_message
from nodes.storage.people import DIRECT, GROUP, People
from nodes.storage.workers import Workers
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.client import HISTORY_DEFAULT, HISTORY_MAX
from shard_store.schema import MessageRow
from shard_store.store import Store

READ_COUNTS_MAX = 100
PAGE_MAX_BYTES = timing.MAX_FRAME_BYTES - 1024
"""The largest History page: a soim client drops frames over timing.MAX_FRAME_BYTES, and the
envelope's header takes a few dozen bytes of it."""
MESSAGE_FIELD_BYTES = 4
"""The tag and length prefix of one `messages` entry of a page (a message is < 2**21 bytes)."""


class Reads:
    """The read handlers of one storage node."""

    def __init__(self, store: Store, workers: Workers, people: People) -> None:
        self.store = store
        self.workers = workers
        self.people = people

    async def history(self, req: client_pb2.HistoryRequest, call: Call) -> client_pb2.HistoryReply:
        if not req.conv_id or req.limit > HISTORY_MAX:
            raise RpcError(pb.INVALID_ARGUMENT, f"a conversation and a limit of 1-{HISTORY_MAX}")
        rows, more = await self.workers.read(self._history, req)
        reply = client_pb2.HistoryReply(conv_id=req.conv_id, more=more)
        if not rows:
            return reply
        accounts = await self.people.accounts({r.sender for r in rows})
        kind, users = await self.people.conversation(req.conv_id, rows[0].sender)
        for r in rows:
            to_user = (users[1] if r.sender == users[0] else users[0]) if kind == DIRECT else 0
            reply.messages.append(
                chat_message(
                    r, accounts.get(r.sender, ""), to_user, req.conv_id if kind == GROUP else 0
                )
            )
        _fit(reply, oldest_first=req.WhichOneof("position") == "after_seq")
        return reply

    def _history(self, req: client_pb2.HistoryRequest) -> tuple[list[MessageRow], bool]:
        which = req.WhichOneof("position")
        loc = self.store.locate("message", req.conv_id)
        with loc.db.connection() as conn:
            return queries.history(
                conn,
                loc.table,
                req.conv_id,
                req.after_seq if which == "after_seq" else None,
                req.before_seq if which == "before_seq" else None,
                req.limit or HISTORY_DEFAULT,
            )

    async def sync(self, req: cluster_pb2.StoreSyncRequest, call: Call) -> client_pb2.SyncReply:
        if not req.user_id:
            raise RpcError(pb.INVALID_ARGUMENT, "a user is required")
        return await self.workers.read(self._sync, req)

    def _sync(self, req: cluster_pb2.StoreSyncRequest) -> client_pb2.SyncReply:
        convs = list(req.conversations)
        last = queries.last_seqs_of(self.store, (c.conv_id for c in convs))
        pairs = [(req.user_id, c.conv_id) for c in convs]
        pairs += [(c.peer_id, c.conv_id) for c in convs if c.kind == DIRECT and c.peer_id]
        cursors = queries.cursors_of(self.store, pairs)
        reply = client_pb2.SyncReply()
        for c in convs:
            out = reply.conversations.add()
            out.CopyFrom(c)
            out.last_seq = last.get(c.conv_id, 0)
            read, delivered = cursors.get((req.user_id, c.conv_id), (0, 0))
            out.read_seq = max(read, min(c.floor_seq, out.last_seq))
            out.delivered_seq = max(delivered, min(c.floor_seq, out.last_seq))
            out.unread = max(out.last_seq - out.read_seq, 0)
            if c.kind == DIRECT and c.peer_id:
                out.peer_read_seq, out.peer_delivered_seq = cursors.get(
                    (c.peer_id, c.conv_id), (0, 0)
                )
        return reply

    async def group_read_counts(
        self, req: client_pb2.GroupReadCountsRequest, call: Call
    ) -> client_pb2.GroupReadCountsReply:
        if not (req.conv_id and 0 < req.from_seq <= req.to_seq < req.from_seq + READ_COUNTS_MAX):
            raise RpcError(pb.INVALID_ARGUMENT, f"from_seq..to_seq: 1 to {READ_COUNTS_MAX} seqs")
        members = (await self.people.members([req.conv_id]))[req.conv_id]
        counts = await self.workers.read(self._read_counts, req, members)
        return client_pb2.GroupReadCountsReply(
            conv_id=req.conv_id, members=len(members), counts=counts
        )

    def _read_counts(
        self, req: client_pb2.GroupReadCountsRequest, members: tuple[int, ...]
    ) -> list[client_pb2.SeqReadCount]:
        loc = self.store.locate("message", req.conv_id)
        with loc.db.connection() as conn:
            authors = queries.authors(conn, loc.table, req.conv_id, req.from_seq, req.to_seq)
        cursors = queries.cursors_of(self.store, [(m, req.conv_id) for m in members])
        reached = [(m, *cursors.get((m, req.conv_id), (0, 0))) for m in members]
        return [
            client_pb2.SeqReadCount(
                seq=seq,
                read=sum(1 for m, read, _ in reached if m != author and read >= seq),
                delivered=sum(1 for m, _, dlv in reached if m != author and dlv >= seq),
            )
            for seq, author in authors
        ]


def _fit(page: client_pb2.HistoryReply, oldest_first: bool) -> None:
    """Cut `page` to PAGE_MAX_BYTES, keeping the messages nearest the requested position (the
    oldest of an after_seq page, else the newest); at least one stays."""
    if page.ByteSize() <= PAGE_MAX_BYTES:
        return
    budget = PAGE_MAX_BYTES - 16  # conv_id and more
    messages = list(page.messages)
    kept: list[client_pb2.ChatMessage] = []
    for msg in messages if oldest_first else reversed(messages):
        budget -= msg.ByteSize() + MESSAGE_FIELD_BYTES
        if budget < 0 and kept:
            break
        kept.append(msg)
    if not oldest_first:
        kept.reverse()
    del page.messages[:]
    page.messages.extend(kept)
    page.more = True
