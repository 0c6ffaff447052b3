"""Search: full-text search of the conversations a gateway names, from the database.

Role: the storage node's handler of Storage.Search. The gateway has checked which
conversations the user may read and from which seq (a group member's history floor); this
module asks the full-text index (`shard_store.search_index`) of every message table holding
one of them, on the read pool of `Workers`, merges the answers newest first by (ts, msg_id)
and fills in the authors' accounts from `People`. Each table is asked for one result more than
the page holds, so `more` is exact. A recalled message is not found: the recall erased its
body (and so its index entry), and its edits are dropped here. An edited message is found by
its first text and by each edit's (an edit is found as itself: kind EDIT, ref_seq the
message). Recipients (to_user / to_group) are left for the gateway, which knows each
conversation's kind and peer.
No sockets: requests arrive on the node's RPC ROUTER; directories are asked through `People`.
"""

from __future__ import annotations

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.storage.fanout import chat_message
from nodes.storage.people import People
from nodes.storage.queries import by_shard
from nodes.storage.workers import Workers
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.client import SEARCH_DEFAULT, check_search
from schema.contracts.storage import MAX_SCOPES
from shard_store import search_index
from shard_store.backend import Conn
from shard_store.schema import MessageRow
from shard_store.search_index import Scope
from shard_store.store import Store

SCOPES_PER_STATEMENT = 100
"""Conversations per SQL statement (each is one OR branch of its WHERE)."""
MAX_ROUNDS = 5


class Search:
    """The Search handler of one storage node."""

    def __init__(self, store: Store, workers: Workers, people: People) -> None:
        self.store = store
        self.workers = workers
        self.people = people

    async def search(
        self, req: cluster_pb2.StoreSearchRequest, call: Call
    ) -> client_pb2.SearchMessagesReply:
        check_search(req.search)
        words = search_index.words_of(req.search.query)
        if len(req.scopes) > MAX_SCOPES:
            raise RpcError(pb.INVALID_ARGUMENT, f"at most {MAX_SCOPES} conversations")
        limit = req.search.limit or SEARCH_DEFAULT
        scopes = [Scope(s.conv_id, s.floor_seq) for s in req.scopes if s.conv_id]
        rows = await self.workers.read(self._search, req.search, words, scopes, limit + 1)
        reply = client_pb2.SearchMessagesReply(more=len(rows) > limit)
        accounts = await self.people.accounts({r.sender for r in rows[:limit]})
        reply.messages.extend(chat_message(r, accounts.get(r.sender, "")) for r in rows[:limit])
        return reply

    def _search(
        self,
        req: client_pb2.SearchMessagesRequest,
        words: list[str],
        scopes: list[Scope],
        limit: int,
    ) -> list[MessageRow]:
        before = (req.before_ts_ms, req.before_msg_id) if req.before_msg_id else None
        found: list[MessageRow] = []
        for db_index, tables in by_shard(
            self.store, "message", scopes, lambda s: s.conv_id
        ).items():
            with self.store.databases[db_index].connection() as conn:
                for table, some in tables.items():
                    for i in range(0, len(some), SCOPES_PER_STATEMENT):
                        found += _hits(
                            conn, table, words, some[i : i + SCOPES_PER_STATEMENT], before, limit
                        )
        found.sort(key=lambda r: (r.ts, r.msg_id), reverse=True)
        return found[:limit]


def _hits(
    conn: Conn,
    table: str,
    words: list[str],
    scopes: list[Scope],
    before: tuple[int, int] | None,
    limit: int,
) -> list[MessageRow]:
    """Up to `limit` live matches in one table: asked again past what was dropped (edits of a
    recalled message), at most MAX_ROUNDS times."""
    out: list[MessageRow] = []
    for _ in range(MAX_ROUNDS):
        rows = [
            MessageRow(*r)
            for r in search_index.search(
                conn, table, MessageRow._fields, words, scopes, before, limit
            )
        ]
        out += _live(conn, table, rows)
        if len(rows) < limit or len(out) >= limit:
            break
        before = (rows[-1].ts, rows[-1].msg_id)
    return out[:limit]


def _live(conn: Conn, table: str, rows: list[MessageRow]) -> list[MessageRow]:
    """`rows` without the edits of a recalled message (a recall erases the message's body, not
    its edits' bodies)."""
    edits = [r for r in rows if r.kind == client_pb2.MESSAGE_KIND_EDIT]
    if not edits:
        return rows
    sql = (
        f"SELECT conv_id, seq FROM `{table}` WHERE body = '' AND ("
        + " OR ".join(["(conv_id = %s AND seq = %s)"] * len(edits))
        + ")"
    )
    recalled = {
        (int(c), int(q))
        for c, q in conn.query(sql, [v for r in edits for v in (r.conv_id, r.ref_seq)])
    }
    return [
        r
        for r in rows
        if r.kind != client_pb2.MESSAGE_KIND_EDIT or (r.conv_id, r.ref_seq) not in recalled
    ]
