"""StoreBatch: a gateway's sends of one drain pass, checked, written and acked.

Role: check each StoreItem (its shape, and that this node owns its conversation on its ring —
else NOT_OWNER for that item; UNAVAILABLE while the writer's backlog is past MAX_BACKLOG), give
the accepted ones message ids and a timestamp, and submit them to the sequencing batch writer
in arrival order; answer the request once every item has committed or failed, one StoreResult
per item in order. An item that refers to an earlier message (a reply, an edit, a recall) is
checked against it first (`amends`). A retried send comes back as the row already stored:
acked with that seq and msg_id and `duplicate` set. A failed write is UNAVAILABLE for its item
(the gateway has the client retry with the same client_msg_id).
Writer futures settle in the writer's threads; they are collected in a queue and handled on the
event loop in one pass per wake-up, so one commit costs one loop wake-up, one ack batch per
request, and one hand-off of its fresh messages to fan-out and cursors (`on_committed`).
No sockets: requests arrive on the node's RPC ROUTER.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass

from prometheus_client import Counter

from fabric.rpc_server import Call
from nodes.storage.amends import Amends
from nodes.storage.fanout import Stored
from nodes.storage.msg_ids import MsgIds
from nodes.storage.people import People
from schema import cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.message import MAX_BODY_CHARS, MAX_CLIENT_MSG_ID_CHARS, MAX_MENTIONS
from shard_store.backend import StoreError
from shard_store.batch_writer import BatchWriter
from shard_store.schema import (
    KIND_EDIT,
    KIND_RECALL,
    KIND_TEXT,
    MessageRow,
)

STORED = Counter("soim_storage_messages_stored_total", "Messages committed")
DUPLICATES = Counter(
    "soim_storage_duplicates_total", "Sends acked as duplicates (a retry of a stored message)"
)
REFUSED = Counter(
    "soim_storage_items_refused_total", "Items answered with an error, by code", ["code"]
)

Reply = cluster_pb2.StoreBatchReply | Awaitable[cluster_pb2.StoreBatchReply]
MAX_BACKLOG = 50_000
"""Rows waiting for the writer past which sends are refused (UNAVAILABLE: retry later)."""


@dataclass(slots=True)
class _Request:
    """A StoreBatch waiting for its items."""

    reply: cluster_pb2.StoreBatchReply
    left: int
    done: asyncio.Future[cluster_pb2.StoreBatchReply]


@dataclass(slots=True)
class _Pending:
    """One submitted item."""

    request: _Request
    index: int
    item: cluster_pb2.StoreItem
    row: MessageRow
    gateway_id: str


class Intake:
    """The StoreBatch handler of one storage node."""

    def __init__(
        self,
        writer: BatchWriter,
        ids: MsgIds,
        owns: Callable[[int], bool],
        people: People,
        amends: Amends,
        on_committed: Callable[[list[Stored]], None],
    ) -> None:
        self.writer = writer
        self.amends = amends
        self.ids = ids
        self.owns = owns
        self.people = people
        self.on_committed = on_committed
        self.open = True
        self._loop = asyncio.get_running_loop()
        self._settled: deque[tuple[_Pending, Future[MessageRow]]] = deque()
        self._wake_scheduled = False

    def store_batch(self, req: cluster_pb2.StoreBatchRequest, call: Call) -> Reply:
        reply = cluster_pb2.StoreBatchReply()
        accepted: list[int] = []
        refused: dict[pb.ErrorCode.ValueType, int] = {}
        full = not self.open or self.writer.backlog > MAX_BACKLOG
        for i, item in enumerate(req.items):
            result = reply.results.add()
            result.origin.CopyFrom(item.origin)
            code = pb.UNAVAILABLE if full else self._check(item)
            if code == pb.OK:
                accepted.append(i)
            else:
                result.error = code
                refused[code] = refused.get(code, 0) + 1
        for code, n in refused.items():
            REFUSED.labels(pb.ErrorCode.Name(code)).inc(n)
        if not accepted:
            return reply
        if any(req.items[i].ref_seq for i in accepted):
            return self._after_refs(req, reply, accepted)
        return self._take_ids(req, reply, accepted)

    async def _after_refs(
        self,
        req: cluster_pb2.StoreBatchRequest,
        reply: cluster_pb2.StoreBatchReply,
        accepted: list[int],
    ) -> cluster_pb2.StoreBatchReply:
        """Check the items that refer to earlier messages, then store those that may."""
        refs = [i for i in accepted if req.items[i].ref_seq]
        codes = await self.amends.check([req.items[i] for i in refs], int(time.time() * 1000))
        refused: set[int] = set()
        for i, code in zip(refs, codes, strict=True):
            if code != pb.OK:
                self._refuse(reply, [i], code)
                refused.add(i)
        accepted = [i for i in accepted if i not in refused]
        if not accepted:
            return reply
        out = self._take_ids(req, reply, accepted)
        return out if isinstance(out, cluster_pb2.StoreBatchReply) else await out

    def _take_ids(
        self,
        req: cluster_pb2.StoreBatchRequest,
        reply: cluster_pb2.StoreBatchReply,
        accepted: list[int],
    ) -> Reply:
        """Give the accepted items message ids (now, or once a refill came) and submit them."""
        ids = self.ids.take_now(len(accepted))
        if ids is not None:
            return self._submit(req, reply, accepted, ids, self._loop.create_future())
        done: asyncio.Future[cluster_pb2.StoreBatchReply] = self._loop.create_future()
        self.ids.take(
            len(accepted),
            lambda ids: self._submit(req, reply, accepted, ids, done),
            lambda err: _answer(done, self._refuse(reply, accepted, err.code)),
        )
        return done

    def _check(self, item: cluster_pb2.StoreItem) -> pb.ErrorCode.ValueType:
        which = item.WhichOneof("to")
        if (
            not item.conv_id
            or not item.sender
            or which is None
            or not getattr(item, which)
            or (which == "to_group" and item.to_group != item.conv_id)
            or not 0 < len(item.client_msg_id) <= MAX_CLIENT_MSG_ID_CHARS
        ):
            return pb.INVALID_ARGUMENT
        if (
            item.kind not in (KIND_TEXT, KIND_EDIT, KIND_RECALL)
            or (item.kind != KIND_TEXT and not item.ref_seq)
            or len(item.mentions) > MAX_MENTIONS
            or not all(item.mentions)
            or (item.mentions and not item.to_group)
        ):
            return pb.INVALID_ARGUMENT
        if item.kind == KIND_RECALL:
            return pb.INVALID_ARGUMENT if item.body else self._owned(item)
        if not item.body.strip():
            return pb.EMPTY_BODY
        if len(item.body) > MAX_BODY_CHARS:
            return pb.BODY_TOO_LONG
        return self._owned(item)

    def _owned(self, item: cluster_pb2.StoreItem) -> pb.ErrorCode.ValueType:
        return pb.OK if self.owns(item.conv_id) else pb.NOT_OWNER

    def _submit(
        self,
        req: cluster_pb2.StoreBatchRequest,
        reply: cluster_pb2.StoreBatchReply,
        accepted: list[int],
        ids: list[int],
        done: asyncio.Future[cluster_pb2.StoreBatchReply],
    ) -> Reply:
        """Submit the accepted items in order; `done` gets the reply once all settled."""
        ts = int(time.time() * 1000)
        items = [req.items[i] for i in accepted]
        rows = [
            MessageRow(
                it.conv_id,
                0,
                msg_id,
                it.sender,
                it.client_msg_id,
                ts,
                it.body,
                it.kind,
                it.ref_seq,
                ",".join(map(str, it.mentions)) if it.mentions else "",
            )
            for it, msg_id in zip(items, ids, strict=True)
        ]
        try:
            futures = self.writer.submit_many(rows)
        except StoreError:  # closed: this node is stopping
            _answer(done, self._refuse(reply, accepted, pb.UNAVAILABLE))
            return done
        except (TypeError, ValueError):
            _answer(done, self._refuse(reply, accepted, pb.INVALID_ARGUMENT))
            return done
        learn = self.people.learn
        groups = []
        for item in items:
            learn(item)
            if item.to_group:
                groups.append(item.to_group)
        if groups:
            self.people.prefetch(groups)
        request = _Request(reply, len(rows), done)
        for index, item, row, fut in zip(accepted, items, rows, futures, strict=True):
            pending = _Pending(request, index, item, row, req.gateway_id)
            fut.add_done_callback(functools.partial(self._on_settled, pending))
        return request.done

    def _refuse(
        self,
        reply: cluster_pb2.StoreBatchReply,
        indexes: list[int],
        code: pb.ErrorCode.ValueType,
    ) -> cluster_pb2.StoreBatchReply:
        for i in indexes:
            reply.results[i].error = code
        REFUSED.labels(pb.ErrorCode.Name(code)).inc(len(indexes))
        return reply

    # ---- settling (any thread → the loop)
    def _on_settled(self, pending: _Pending, fut: Future[MessageRow]) -> None:
        """A writer future settled (writer thread): queue it, wake the loop once."""
        self._settled.append((pending, fut))
        if not self._wake_scheduled:
            self._wake_scheduled = True
            with contextlib.suppress(RuntimeError):  # a closed loop: the node is gone
                self._loop.call_soon_threadsafe(self.settle)

    def settle(self) -> None:
        """Handle every settled future: fill replies, answer finished requests, hand fresh
        messages on (runs on the loop after each wake-up, and once more at shutdown)."""
        self._wake_scheduled = False
        fresh: list[Stored] = []
        failed = duplicates = 0
        settled = self._settled
        while settled:
            pending, fut = settled.popleft()
            request = pending.request
            result = request.reply.results[pending.index]
            err = fut.exception() if not fut.cancelled() else StoreError("cancelled")
            if err is None:
                row = fut.result()
                duplicate = row.msg_id != pending.row.msg_id
                ack = result.ack
                ack.client_msg_id = row.client_msg_id
                ack.conv_id = row.conv_id
                ack.msg_id = row.msg_id
                ack.seq = row.seq
                ack.ts_ms = row.ts
                if duplicate:
                    ack.duplicate = True
                    duplicates += 1
                else:
                    fresh.append(Stored(row, pending.item, pending.gateway_id))
            else:
                result.error = pb.UNAVAILABLE
                failed += 1
            request.left -= 1
            if request.left == 0:
                _answer(request.done, request.reply)
        STORED.inc(len(fresh))
        DUPLICATES.inc(duplicates)
        if failed:
            REFUSED.labels("UNAVAILABLE").inc(failed)
        if fresh:
            self.on_committed(fresh)
            self.amends.committed(fresh)


def _answer(
    done: asyncio.Future[cluster_pb2.StoreBatchReply], reply: cluster_pb2.StoreBatchReply
) -> None:
    """Settle a StoreBatch's future, unless its deadline passed and the server cancelled it."""
    if not done.done():
        done.set_result(reply)
