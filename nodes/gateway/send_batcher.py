"""The gateway's send path: Sends of one pass become one access check and one StoreBatch per
storage node, and the StoreBatch replies become the acks.

Role: batch at this hop (every hop batches). Sends queue up for the access check, one check in
flight at a time; each checked send then joins the lane of the storage node owning its
conversation. A send whose answer is cached, arriving while no check is queued or in flight,
joins its lane at once (no send waits for a check before it, so none is overtaken). Each lane
keeps one StoreBatch in flight and flushes at once when idle; while one is out the next
accumulates. Lanes are independent: a storage node that died (before the membership notices)
holds up only the sends of the conversations it owned, never another owner's. Within a lane
sends keep the order they arrived in, so each session's sends to one conversation stay in order;
sends still queued in a lane whose node is no longer the owner move to the new owner's lane.
The sender of every item is the session's user, never a field of the request.
Peer sockets: none of its own; directory and storage nodes are reached through `AccessCache`
and `Upstream`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from fabric.methods import RpcError
from fabric.retry import ONCE
from nodes.gateway.access import AccessCache
from nodes.gateway.sessions import Session
from nodes.gateway.upstream import Upstream
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb

log = logging.getLogger(__name__)
_RETRY_LATER = frozenset({pb.NOT_OWNER, pb.TIMEOUT})


@dataclass(slots=True)
class PendingSend:
    """A Send waiting for its ack."""

    session: Session
    request: client_pb2.SendRequest
    future: asyncio.Future[client_pb2.SendAck]

    conv_id: int = 0
    """Its conversation, once the access check has found it."""


@dataclass(slots=True)
class _Lane:
    """The sends bound for one storage node, one StoreBatch in flight."""

    queue: list[PendingSend]
    task: asyncio.Task[None] | None = None


class SendBatcher:
    """Queues Sends, checks them in batches, and stores them in batches per storage node."""

    def __init__(self, gateway_id: str, access: AccessCache, upstream: Upstream) -> None:
        self.gateway_id = gateway_id
        self.access = access
        self.upstream = upstream
        self._queue: list[PendingSend] = []
        self._worker: asyncio.Task[None] | None = None
        self._lanes: dict[str, _Lane] = {}

    def submit(
        self, session: Session, request: client_pb2.SendRequest
    ) -> asyncio.Future[client_pb2.SendAck]:
        """Queue a Send; the future resolves to its SendAck or fails with RpcError."""
        future: asyncio.Future[client_pb2.SendAck] = asyncio.get_running_loop().create_future()
        pending = PendingSend(session, request, future)
        which = request.WhichOneof("to")
        if self._worker is None and which is not None:
            hit = self.access.cached(session.user_id, which, getattr(request, which))
            if hit is not None:
                pending.conv_id = hit.conv_id
                self._route(pending)
                return future
        self._queue.append(pending)
        if self._worker is None:
            self._worker = asyncio.ensure_future(self._flush())
        return future

    async def close(self) -> None:
        """Stop; queued sends fail with UNAVAILABLE (their clients retry elsewhere)."""
        tasks = [t for t in (self._worker, *(lane.task for lane in self._lanes.values())) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        waiting = self._queue + [p for lane in self._lanes.values() for p in lane.queue]
        for pending in waiting:
            _fail(pending, pb.UNAVAILABLE, "gateway stopping")
        self._queue, self._lanes = [], {}

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self._check(batch)
                except Exception:
                    log.exception("send batch failed")
                    for pending in batch:
                        _fail(pending, pb.INTERNAL, "send failed; retry")
        finally:
            self._worker = None

    async def _check(self, batch: list[PendingSend]) -> None:
        checks = [
            cluster_pb2.AccessCheck(user_id=p.session.user_id, **_target(p.request)) for p in batch
        ]
        try:
            results = await self.access.check(checks)
        except RpcError as err:
            for pending in batch:
                _fail(pending, err.code, err.detail)
            return
        for pending, result in zip(batch, results, strict=True):
            if result.error != pb.OK:
                _fail(pending, result.error, "")
            else:
                pending.conv_id = result.conv_id
                self._route(pending)

    def _route(self, pending: PendingSend) -> None:
        """Queue `pending` in the lane of its conversation's owner as the ring says now."""
        try:
            owner = self.upstream.storage_owner(pending.conv_id)
        except RpcError as err:
            _fail(pending, err.code, err.detail)
            return
        lane = self._lanes.get(owner)
        if lane is None:
            lane = self._lanes[owner] = _Lane([])
        lane.queue.append(pending)
        if lane.task is None:
            lane.task = asyncio.ensure_future(self._run_lane(owner, lane))

    async def _run_lane(self, owner: str, lane: _Lane) -> None:
        try:
            while lane.queue:
                waiting, lane.queue = lane.queue, []
                batch: list[PendingSend] = []
                ring = self.upstream.storage_ring()
                for pending in waiting:
                    if ring and ring.owner(pending.conv_id) == owner:
                        batch.append(pending)
                    else:  # the ring changed while it waited: off to the new owner
                        self._route(pending)
                if batch:
                    try:
                        await self._store_at(owner, batch)
                    except Exception:
                        log.exception("store batch failed")
                        for pending in batch:
                            _fail(pending, pb.INTERNAL, "send failed; retry")
        finally:
            lane.task = None
            if not lane.queue and self._lanes.get(owner) is lane:
                del self._lanes[owner]

    async def _store_at(self, owner: str, items: list[PendingSend]) -> None:
        request = cluster_pb2.StoreBatchRequest(gateway_id=self.gateway_id)
        add = request.items.add
        for pending in items:  # built in place: a StoreItem made apart is copied in again
            s, req = pending.session, pending.request
            item = add(
                sender=s.user_id,
                sender_account=s.account,
                client_msg_id=req.client_msg_id,
                conv_id=pending.conv_id,
                body=req.body,
                kind=req.kind,
                ref_seq=req.ref_seq,
            )
            item.origin.session_id = s.identity
            if req.mentions:
                item.mentions.extend(req.mentions)
            if req.WhichOneof("to") == "to_user":
                item.to_user = req.to_user
            else:
                item.to_group = req.to_group
        try:
            # asked once: the client's outbox resends these sends, to the owner it finds then
            reply = await self.upstream.storage(owner, "StoreBatch", request, ONCE)
        except RpcError as err:
            for pending in items:
                _fail(
                    pending,
                    pb.UNAVAILABLE if err.code in _RETRY_LATER else err.code,
                    "not stored; retry",
                )
            return
        for pending, result in zip(items, reply.results, strict=True):
            if result.error == pb.OK:
                if not pending.future.done():
                    pending.future.set_result(result.ack)
            else:
                code = pb.UNAVAILABLE if result.error in _RETRY_LATER else result.error
                _fail(pending, code, "not stored; retry" if code == pb.UNAVAILABLE else "")


def _target(req: client_pb2.SendRequest) -> dict[str, int]:
    which = req.WhichOneof("to")
    if which is None:
        raise RpcError(pb.INVALID_ARGUMENT, "send needs a user or a group")
    return {which: getattr(req, which)}


def _fail(pending: PendingSend, code: pb.ErrorCode.ValueType, detail: str) -> None:
    if not pending.future.done():
        pending.future.set_exception(RpcError(code, detail))
