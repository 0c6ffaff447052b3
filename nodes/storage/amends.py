"""Edits, recalls and replies: the checks of a send that refers to an earlier message.

Role: before a StoreItem with a ref_seq is stored, read the message it refers to. A reply
needs a message (not an edit or recall event) at that seq. An edit or recall also needs it to
be the sender's own (else NOT_AUTHOR), not recalled already (NOT_FOUND: a recalled message has
an empty body, which no message can have) and stored at most SOIM_EDIT_WINDOW_S ago (else
EDIT_WINDOW_CLOSED; 24 h by default, 0 turns edits off). A retry of an item already stored
passes (the sequencer acks it as a duplicate, even once its recall erased the message). After
a recall commits, the recalled message's stored body is erased (the event stays, so readers
show "message recalled").
No sockets: reads and writes on the node's `Workers` threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fabric.config import read_int
from fabric.methods import RpcError
from nodes.storage.fanout import Stored
from nodes.storage.workers import Workers
from schema import cluster_pb2
from schema import common_pb2 as pb
from shard_store.schema import KIND_RECALL, KIND_TEXT
from shard_store.store import Store

log = logging.getLogger(__name__)
EDIT_WINDOW_S = 24 * 3600
"""Default of SOIM_EDIT_WINDOW_S: how long after sending a message its author may change it."""
EDIT_WINDOW_MAX_S = 365 * 24 * 3600


def edit_window_ms(env: Mapping[str, str]) -> int:
    """SOIM_EDIT_WINDOW_S of `env` (the node's Config.extra), in milliseconds."""
    return read_int(env, "SOIM_EDIT_WINDOW_S", EDIT_WINDOW_S, 0, EDIT_WINDOW_MAX_S) * 1000


Target = tuple[int, int, int, str]
"""(sender, ts, kind, body) of the message an item refers to."""


def code_of(
    item: cluster_pb2.StoreItem, target: Target | None, now_ms: int, window_ms: int
) -> pb.ErrorCode.ValueType:
    """Whether `item` may refer to `target` (the message at its ref_seq, None when there is
    none): OK or the error code."""
    if target is None:
        return pb.NOT_FOUND
    sender, ts, kind, body = target
    if kind != KIND_TEXT:
        return pb.INVALID_ARGUMENT  # events are not replied to, edited or recalled
    if item.kind == KIND_TEXT:
        return pb.OK
    if sender != item.sender:
        return pb.NOT_AUTHOR
    if not body:
        return pb.NOT_FOUND  # recalled already
    return pb.OK if now_ms - ts <= window_ms else pb.EDIT_WINDOW_CLOSED


class Amends:
    """Checks items with a ref_seq; erases recalled bodies."""

    def __init__(self, store: Store, workers: Workers, window_ms: int) -> None:
        self.store = store
        self.workers = workers
        self.window_ms = window_ms
        self._background: set[asyncio.Task[Any]] = set()

    async def check(
        self, items: Sequence[cluster_pb2.StoreItem], now_ms: int
    ) -> list[pb.ErrorCode.ValueType]:
        """One code per item (OK or why not); UNAVAILABLE for all when the store is down."""
        try:
            found = await self.workers.read(self._targets, items)
        except RpcError:
            return [pb.UNAVAILABLE] * len(items)
        return [
            pb.OK if retry else code_of(item, target, now_ms, self.window_ms)
            for item, (target, retry) in zip(items, found, strict=True)
        ]

    def _targets(self, items: Sequence[cluster_pb2.StoreItem]) -> list[tuple[Target | None, bool]]:
        """Per item: the message it refers to, and whether the item itself is stored already."""
        out: list[tuple[Target | None, bool]] = []
        for item in items:
            loc = self.store.locate("message", item.conv_id)
            with loc.db.connection() as conn:
                rows = conn.query(
                    f"SELECT sender, ts, kind, body FROM `{loc.table}` "
                    "WHERE conv_id = %s AND seq = %s",
                    (item.conv_id, item.ref_seq),
                )
                retry = conn.query(
                    f"SELECT 1 FROM `{loc.table}` WHERE conv_id = %s AND "
                    "sender = %s AND client_msg_id = %s",
                    (item.conv_id, item.sender, item.client_msg_id),
                )
            target = rows[0] if rows else None
            out.append(
                (
                    None
                    if target is None
                    else (int(target[0]), int(target[1]), int(target[2]), str(target[3])),
                    bool(retry),
                )
            )
        return out

    def committed(self, stored: list[Stored]) -> None:
        """Erase the bodies of messages recalled by these fresh rows (in the background)."""
        recalls = [(s.row.conv_id, s.row.ref_seq) for s in stored if s.row.kind == KIND_RECALL]
        if recalls:
            task = asyncio.ensure_future(self._erase(recalls))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _erase(self, recalls: list[tuple[int, int]]) -> None:
        try:
            await self.workers.write(self._erase_now, recalls)
        except RpcError as err:  # the event is stored: readers show the message recalled
            log.warning("recalled bodies not erased (%s): %s", err, recalls)

    def _erase_now(self, recalls: list[tuple[int, int]]) -> None:
        for conv_id, seq in recalls:
            loc = self.store.locate("message", conv_id)
            with loc.db.connection() as conn:
                conn.execute(
                    f"UPDATE `{loc.table}` SET body = '' WHERE conv_id = %s "
                    "AND seq = %s AND kind = %s",
                    (conv_id, seq, KIND_TEXT),
                )
