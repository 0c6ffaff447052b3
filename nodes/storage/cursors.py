"""Cursors: delivered and read positions per user and conversation, moved forward only.

Role: serve Storage.Cursors — for each update check it (a seq beyond the conversation's last
stored one is INVALID_ARGUMENT), move the cursors to the max of stored and asked (a read moves
delivered as far), answer with the cursors after the update, and when they moved push a Receipt
to the friend of a direct conversation and to the user's other devices. Also move a sender's
own cursors to each message it stored (`own`), so unread counts exclude one's own messages.
Updates are group-committed: what queues up while one batch is written (any number of requests
and senders' moves) goes into the next; senders' moves alone wait up to
`timing.OWN_CURSORS_DELAY_S` for more (a client's update ends the wait), so a busy node writes
them in a few transactions a second rather than one per flush. Each batch is one job on the
node's one cursor thread (`Workers.write`) with one connection per database, so writes never
race each other; every statement only ever raises a cursor.
No sockets: requests arrive on the node's RPC ROUTER; receipts leave through `PushForwarder`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import Counter

from fabric import timing
from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.storage import queries
from nodes.storage.fanout import PushForwarder, Stored
from nodes.storage.workers import Workers
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from shard_store.store import Store

log = logging.getLogger(__name__)

Move = tuple[int, int, int, int]
"""(user_id, conv_id, read_seq, delivered_seq) asked for; 0 leaves a cursor as it is."""
Outcome = tuple[int, tuple[int, int], tuple[int, int]]
"""(error code, (read, delivered) before, (read, delivered) after)."""
CURSOR_BATCHES = Counter(
    "soim_storage_cursor_batches_total",
    "Cursor batches written on the cursor thread (a transaction per database they touch)",
)


class Cursors:
    """The cursor writes of one storage node, group-committed: what queues up while a batch is
    being written goes into the next one (one database job, whatever the number of requests)."""

    def __init__(self, store: Store, workers: Workers, fanout: PushForwarder) -> None:
        self.store = store
        self.workers = workers
        self.fanout = fanout
        self._queue: list[tuple[list[Move], bool, asyncio.Future[list[Outcome]] | None]] = []
        self._job: asyncio.Task[None] | None = None
        self._asked = asyncio.Event()  # a client's update is queued

    async def cursors(
        self, req: cluster_pb2.CursorBatchRequest, call: Call
    ) -> cluster_pb2.CursorBatchReply:
        moves: list[Move] = []
        for u in req.updates:
            if not (u.user_id and u.conv_id and (u.read_seq or u.delivered_seq)):
                raise RpcError(
                    pb.INVALID_ARGUMENT, "an update needs a user, a conversation and a seq"
                )
            moves.append((u.user_id, u.conv_id, u.read_seq, max(u.delivered_seq, u.read_seq)))
        done: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._enqueue(moves, True, done)
        outcomes = await done
        reply = cluster_pb2.CursorBatchReply()
        receipts = []
        for u, (code, before, after) in zip(req.updates, outcomes, strict=True):
            reply.results.add(
                origin=u.origin, error=code, read_seq=after[0], delivered_seq=after[1]
            )
            if code == pb.OK and after != before:
                skip = cluster_pb2.SessionRef(
                    user_id=u.user_id, gateway_id=req.gateway_id, session_id=u.origin.session_id
                )
                receipts.append(
                    (
                        client_pb2.Receipt(
                            conv_id=u.conv_id,
                            user_id=u.user_id,
                            read_seq=after[0],
                            delivered_seq=after[1],
                        ),
                        u.peer_id,
                        skip,
                    )
                )
        self.fanout.receipts(receipts)
        return reply

    def own(self, stored: list[Stored]) -> None:
        """Move each sender's cursors to its newest stored message (best effort, in order)."""
        newest: dict[tuple[int, int], int] = {}
        for s in stored:
            key = (s.row.sender, s.row.conv_id)
            newest[key] = max(newest.get(key, 0), s.row.seq)
        self._enqueue([(user, conv, seq, seq) for (user, conv), seq in newest.items()], False, None)

    def _enqueue(
        self, moves: list[Move], requested: bool, done: asyncio.Future[list[Outcome]] | None
    ) -> None:
        self._queue.append((moves, requested, done))
        if requested:
            self._asked.set()
        if self._job is None or self._job.done():
            self._job = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self._queue:
            if not self._asked.is_set():  # senders' moves only: let more gather
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timing.OWN_CURSORS_DELAY_S):
                        await self._asked.wait()
            self._asked.clear()
            batch, self._queue = self._queue, []
            moves = [m for ms, _, _ in batch for m in ms]
            requested = [r for ms, r, _ in batch for _ in ms]
            CURSOR_BATCHES.inc()
            try:
                outcomes = await self.workers.write(self._apply, moves, requested)
            except RpcError as err:
                if not any(done for _, _, done in batch):
                    log.warning("senders' cursors not moved: %s", err)
                for _, _, done in batch:
                    if done is not None and not done.done():
                        done.set_exception(err)
                continue
            at = 0
            for ms, _, done in batch:
                if done is not None and not done.done():
                    done.set_result(outcomes[at : at + len(ms)])
                at += len(ms)

    def _apply(self, moves: list[Move], requested: list[bool]) -> list[Outcome]:
        """Cursor thread: raise the cursors of `moves`. Requested ones (from clients) are
        checked against the last stored seq and read before and after, for the answer and the
        receipts; the others (senders' own) are written as they are (a raise only ever)."""
        outcomes: list[Outcome] = [(pb.OK, (0, 0), (0, 0))] * len(moves)
        asked = [i for i, r in enumerate(requested) if r]
        last = queries.last_seqs_of(self.store, {moves[i][1] for i in asked})
        valid = [
            i for i, r in enumerate(requested) if not r or max(moves[i][2:]) <= last[moves[i][1]]
        ]
        for i in set(asked) - set(valid):
            outcomes[i] = (pb.INVALID_ARGUMENT, (0, 0), (0, 0))
        for db_index, tables in queries.by_shard(
            self.store, "cursor", valid, lambda i: moves[i][0]
        ).items():
            db = self.store.databases[db_index]
            with db.connection() as conn:
                for table, indexes in tables.items():
                    pairs = [(moves[i][0], moves[i][1]) for i in indexes if requested[i]]
                    before = queries.cursors(conn, table, pairs) if pairs else {}
                    want: dict[tuple[int, int], tuple[int, int]] = {}
                    for i in indexes:
                        user, conv, read, delivered = moves[i]
                        now = want.get((user, conv)) or before.get((user, conv), (0, 0))
                        want[(user, conv)] = (max(now[0], read), max(now[1], delivered))
                    changed = [
                        (u, c, r, d)
                        for (u, c), (r, d) in want.items()
                        if (r, d) != before.get((u, c), (0, 0))
                    ]
                    if changed:
                        queries.upsert_cursors(conn, db.kind, table, changed)
                    after = queries.cursors(conn, table, pairs) if pairs and changed else before
                    for i in indexes:
                        if requested[i]:
                            key = (moves[i][0], moves[i][1])
                            outcomes[i] = (pb.OK, before.get(key, (0, 0)), after.get(key, (0, 0)))
        return outcomes

    async def close(self) -> None:
        """Wait for the cursor writes queued or running."""
        if self._job is not None:
            await asyncio.gather(self._job, return_exceptions=True)
