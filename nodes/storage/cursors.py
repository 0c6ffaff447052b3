"""Cursors: delivered and read positions per user and conversation, moved forward only.

Role: serve Storage.Cursors — for each update check it (a seq beyond the conversation's last
stored one is INVALID_ARGUMENT), move the cursors to the max of stored and asked (a read moves
delivered as far), answer with the cursors after the update, and when they moved push a Receipt
to the friend of a direct conversation and to the user's other devices. Also move a sender's
own cursors to each message it stored (`own`), so unread counts exclude one's own messages.
All writes of this node run on its one cursor thread (`Workers.write`), so they never race
each other; every statement only ever raises a cursor.
No sockets: requests arrive on the node's RPC ROUTER; receipts leave through `Fanout`.
"""

from __future__ import annotations

import asyncio
import logging

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.storage import queries
from nodes.storage.fanout import Fanout, Stored
from nodes.storage.workers import Workers
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from shard_store.store import Store

log = logging.getLogger(__name__)

Move = tuple[int, int, int, int]
"""(user_id, conv_id, read_seq, delivered_seq) asked for; 0 leaves a cursor as it is."""
Outcome = tuple[int, tuple[int, int], tuple[int, int]]
"""(error code, (read, delivered) before, (read, delivered) after)."""


class Cursors:
    """The cursor writes of one storage node."""

    def __init__(self, store: Store, workers: Workers, fanout: Fanout) -> None:
        self.store = store
        self.workers = workers
        self.fanout = fanout
        self._own: set[asyncio.Task[None]] = set()

    async def cursors(self, req: cluster_pb2.CursorBatchRequest,
                      call: Call) -> cluster_pb2.CursorBatchReply:
        moves: list[Move] = []
        for u in req.updates:
            if not (u.user_id and u.conv_id and (u.read_seq or u.delivered_seq)):
                raise RpcError(pb.INVALID_ARGUMENT, "an update needs a user, a conversation "
                                                    "and a seq")
            moves.append((u.user_id, u.conv_id, u.read_seq, max(u.delivered_seq, u.read_seq)))
        outcomes = await self.workers.write(self._apply, moves)
        reply = cluster_pb2.CursorBatchReply()
        receipts = []
        for u, (code, before, after) in zip(req.updates, outcomes, strict=True):
            reply.results.add(origin=u.origin, error=code, read_seq=after[0],
                              delivered_seq=after[1])
            if code == pb.OK and after != before:
                skip = cluster_pb2.SessionRef(user_id=u.user_id, gateway_id=req.gateway_id,
                                              session_id=u.origin.session_id)
                receipts.append((client_pb2.Receipt(conv_id=u.conv_id, user_id=u.user_id,
                                                    read_seq=after[0], delivered_seq=after[1]),
                                 u.peer_id, skip))
        self.fanout.receipts(receipts)
        return reply

    def own(self, stored: list[Stored]) -> None:
        """Move each sender's cursors to its newest stored message (best effort, in order)."""
        newest: dict[tuple[int, int], int] = {}
        for s in stored:
            key = (s.row.sender, s.row.conv_id)
            newest[key] = max(newest.get(key, 0), s.row.seq)
        moves = [(user, conv, seq, seq) for (user, conv), seq in newest.items()]
        task = asyncio.ensure_future(self.workers.write(self._apply, moves, check=False))
        self._own.add(task)
        task.add_done_callback(self._own_done)

    def _own_done(self, task: asyncio.Task[list[Outcome]]) -> None:
        self._own.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("senders' cursors not moved: %s", task.exception())

    def _apply(self, moves: list[Move], check: bool = True) -> list[Outcome]:
        """Cursor thread: validate, read, raise and read back the cursors of `moves`."""
        outcomes: list[Outcome] = [(pb.OK, (0, 0), (0, 0))] * len(moves)
        valid = list(range(len(moves)))
        if check:
            last = self._last_seqs({conv for _, conv, _, _ in moves})
            valid = [i for i in valid if max(moves[i][2:]) <= last[moves[i][1]]]
            for i in set(range(len(moves))) - set(valid):
                outcomes[i] = (pb.INVALID_ARGUMENT, (0, 0), (0, 0))
        by_table: dict[tuple[int, str], list[int]] = {}
        for i in valid:
            loc = self.store.locate("cursor", moves[i][0])
            by_table.setdefault((loc.db.index, loc.table), []).append(i)
        for (db_index, table), indexes in by_table.items():
            db = self.store.databases[db_index]
            pairs = [(moves[i][0], moves[i][1]) for i in indexes]
            with db.connection() as conn:
                before = queries.cursors(conn, table, pairs)
                want: dict[tuple[int, int], tuple[int, int]] = {}
                for i in indexes:
                    user, conv, read, delivered = moves[i]
                    now = want.get((user, conv)) or before.get((user, conv), (0, 0))
                    want[(user, conv)] = (max(now[0], read), max(now[1], delivered))
                changed = [(u, c, r, d) for (u, c), (r, d) in want.items()
                           if (r, d) != before.get((u, c), (0, 0))]
                if changed:
                    queries.upsert_cursors(conn, db.kind, table, changed)
                    after = queries.cursors(conn, table, pairs)
                else:
                    after = before
            for i in indexes:
                key = (moves[i][0], moves[i][1])
                outcomes[i] = (pb.OK, before.get(key, (0, 0)), after.get(key, (0, 0)))
        return outcomes

    def _last_seqs(self, conv_ids: set[int]) -> dict[int, int]:
        last: dict[int, int] = {}
        for (db_index, table), convs in queries.by_table(self.store, "message", conv_ids).items():
            with self.store.databases[db_index].connection() as conn:
                last.update(queries.last_seqs(conn, table, convs))
        return last

    async def close(self) -> None:
        """Wait for senders' cursor moves still running."""
        await asyncio.gather(*self._own, return_exceptions=True)
