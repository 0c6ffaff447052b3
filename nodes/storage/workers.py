"""The storage node's database threads, for work that must not block the event loop.

Role: `read()` runs a blocking function on a small pool (History, Sync, read counts, message id
refills); `write()` runs it on one cursor thread, so this node's cursor updates never race each
other. A database that is down becomes RpcError(UNAVAILABLE) — callers retry idempotent calls —
any other store failure RpcError(INTERNAL); both are logged once here. The writer's own threads
(shard_store.batch_writer) are apart from these.
No sockets: the functions borrow connections from the store's pools.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from fabric.methods import RpcError
from schema import common_pb2 as pb
from shard_store.backend import StoreError, StoreUnavailable

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

READ_THREADS = 4


class Workers:
    """A read pool and a cursor-writer thread. `close()` them when stopping."""

    def __init__(self, read_threads: int = READ_THREADS) -> None:
        self.reads = ThreadPoolExecutor(read_threads, thread_name_prefix="storage-read")
        self.cursors = ThreadPoolExecutor(1, thread_name_prefix="storage-cursor")

    async def read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on the read pool."""
        return await self._run(self.reads, fn, *args, **kwargs)

    async def write(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on the cursor thread (one at a time, in call order)."""
        return await self._run(self.cursors, fn, *args, **kwargs)

    async def _run(
        self, pool: ThreadPoolExecutor, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, functools.partial(fn, *args, **kwargs))
        except StoreUnavailable as err:
            log.warning("%s: %s", fn.__name__, err)
            raise RpcError(pb.UNAVAILABLE, "the message store is unavailable; retry") from None
        except StoreError as err:
            log.error("%s: %s", fn.__name__, err)
            raise RpcError(pb.INTERNAL, "message store error") from None

    def close(self) -> None:
        """Drop queued work and let the threads end after what they are running (the node's
        requests have been cancelled and its cursor moves awaited by now)."""
        self.cursors.shutdown(wait=False, cancel_futures=True)
        self.reads.shutdown(wait=False, cancel_futures=True)
