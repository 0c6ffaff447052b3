"""Message ids for the event loop: a buffer of Leaf segment ids (tag "msg") refilled off-loop.

Role: the StoreBatch handler takes the ids of a whole request at once without ever blocking the
event loop on the database: `take_now(n)` serves from memory, and when fewer than LOW_WATER
remain a worker thread fetches REFILL more from the `SegmentAllocator`. A caller that finds the
buffer short calls `take(n, then, failed)`, which queues it at once; requests are served in
arrival order, so the sends of one gateway keep their order even across a refill.
No sockets: the allocator borrows database 0's pool in its own thread and in the executor's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from fabric.methods import RpcError
from schema import common_pb2 as pb
from shard_store.segments import SegmentAllocator

log = logging.getLogger(__name__)
TAG = "msg"
STEP = 10_000
"""Ids per range claimed in the id_segment table (when the "msg" tag is first created)."""
REFILL = 20_000
LOW_WATER = 8_000
WAIT_S = 2.0
"""Longest a request waits for ids before UNAVAILABLE."""


@dataclass(slots=True)
class _Waiter:
    """A request queued for ids."""

    n: int
    then: Callable[[list[int]], object]
    failed: Callable[[RpcError], object]
    timer: asyncio.TimerHandle | None = None
    over: bool = False

    def end(self) -> None:
        self.over = True
        if self.timer is not None:
            self.timer.cancel()


class MsgIds:
    """Buffered msg ids. Use on the event loop only."""

    def __init__(self, allocator: SegmentAllocator, executor: Executor) -> None:
        self._alloc = allocator
        self._executor = executor
        self._ids: deque[range] = deque()
        self._count = 0  # ids in self._ids
        self._refill: asyncio.Future[list[range]] | None = None
        self._waiters: deque[_Waiter] = deque()

    def take_now(self, n: int) -> list[int] | None:
        """`n` ids from memory, or None when fewer are buffered or a request is already waiting
        (a refill has started; call `take`, which keeps this request's place in line)."""
        self._maybe_refill()
        if self._waiters or self._count < n:
            return None
        out = self._pop(n)
        self._maybe_refill()
        return out

    def take(
        self, n: int, then: Callable[[list[int]], object], failed: Callable[[RpcError], object]
    ) -> None:
        """Queue for `n` ids behind every request that asked before: `then(ids)` runs as soon
        as refills allow — synchronously, before any later request can take ids — or
        `failed(RpcError(UNAVAILABLE))` past WAIT_S or when a refill fails."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(n, then, failed)
        waiter.timer = loop.call_later(WAIT_S, self._give_up, waiter)
        self._waiters.append(waiter)
        self._serve()

    def _pop(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            head = self._ids[0]
            take = head[: n - len(out)]
            out.extend(take)
            if len(take) == len(head):
                self._ids.popleft()
            else:
                self._ids[0] = head[len(take) :]
        self._count -= n
        return out

    def _serve(self) -> None:
        waiters = self._waiters
        while waiters and (waiters[0].over or self._count >= waiters[0].n):
            waiter = waiters.popleft()
            if not waiter.over:
                waiter.end()
                waiter.then(self._pop(waiter.n))
        self._maybe_refill()

    def _give_up(self, waiter: _Waiter) -> None:
        if not waiter.over:
            waiter.end()
            waiter.failed(RpcError(pb.UNAVAILABLE, "no message ids: database unavailable"))
        self._serve()  # drop it from the line

    def _maybe_refill(self) -> None:
        short = self._waiters and self._count < self._waiters[0].n
        if self._refill is None and (self._count < LOW_WATER or short):
            loop = asyncio.get_running_loop()
            self._refill = loop.run_in_executor(
                self._executor, self._alloc.next_ranges, TAG, REFILL
            )
            self._refill.add_done_callback(self._refilled)

    def _refilled(self, fut: asyncio.Future[list[range]]) -> None:
        self._refill = None
        if fut.cancelled():
            return
        err = fut.exception()
        if err is not None:
            log.warning("message ids: %s", err)
            waiters, self._waiters = self._waiters, deque()
            for waiter in waiters:  # their requests answer UNAVAILABLE; clients retry
                if not waiter.over:
                    waiter.end()
                    waiter.failed(RpcError(pb.UNAVAILABLE, "no message ids: database unavailable"))
            return
        ranges = fut.result()
        self._ids.extend(ranges)
        self._count += sum(map(len, ranges))
        self._serve()
