"""Message ids for the event loop: a buffer of Leaf segment ids (tag "msg") refilled off-loop.

Role: the StoreBatch handler takes the ids of a whole request at once without ever blocking the
event loop on the database: `take_now(n)` serves from memory, and when fewer than LOW_WATER
remain a worker thread fetches REFILL more from the `SegmentAllocator`. A caller that finds the
buffer short awaits `take(n)`; waiters are served in arrival order.
No sockets: the allocator borrows database 0's pool in its own thread and in the executor's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import Executor

from fabric.methods import RpcError
from schema import common_pb2 as pb
from shard_store.backend import StoreError
from shard_store.segments import SegmentAllocator

log = logging.getLogger(__name__)
TAG = "msg"
STEP = 10_000
"""Ids per range claimed in the id_segment table (when the "msg" tag is first created)."""
REFILL = 20_000
LOW_WATER = 8_000
WAIT_S = 2.0
"""Longest a request waits for ids before UNAVAILABLE."""


class MsgIds:
    """Buffered msg ids. Use on the event loop only."""

    def __init__(self, allocator: SegmentAllocator, executor: Executor) -> None:
        self._alloc = allocator
        self._executor = executor
        self._ids: deque[int] = deque()
        self._refill: asyncio.Future[list[int]] | None = None
        self._turn = asyncio.Lock()

    @property
    def waiting(self) -> bool:
        """A request is waiting for ids (later ones must queue behind it)."""
        return self._turn.locked()

    def take_now(self, n: int) -> list[int] | None:
        """`n` ids from memory, or None when fewer are buffered (a refill has started)."""
        self._maybe_refill()
        if len(self._ids) < n or self.waiting:
            return None
        pop = self._ids.popleft
        out = [pop() for _ in range(n)]
        self._maybe_refill()
        return out

    async def take(self, n: int) -> list[int]:
        """`n` ids, waiting for refills in turn; RpcError(UNAVAILABLE) past WAIT_S."""
        async with self._turn:
            try:
                async with asyncio.timeout(WAIT_S):
                    while len(self._ids) < n:
                        self._maybe_refill()
                        assert self._refill is not None
                        await asyncio.shield(self._refill)
            except (TimeoutError, StoreError) as err:
                raise RpcError(pb.UNAVAILABLE, "no message ids: database unavailable") from err
            pop = self._ids.popleft
            return [pop() for _ in range(n)]

    def _maybe_refill(self) -> None:
        if self._refill is None and len(self._ids) < LOW_WATER:
            loop = asyncio.get_running_loop()
            self._refill = loop.run_in_executor(self._executor, self._alloc.next_ids, TAG, REFILL)
            self._refill.add_done_callback(self._refilled)

    def _refilled(self, fut: asyncio.Future[list[int]]) -> None:
        self._refill = None
        if fut.cancelled():
            return
        err = fut.exception()
        if err is not None:
            log.warning("message ids: %s", err)
            return
        self._ids.extend(fut.result())
