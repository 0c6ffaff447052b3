"""What every directory handler shares: the store, the id allocator, settings, token signer,
throttle, caches, the worker pools, and the way a write is announced.

Role: run blocking work off the event loop — `db()` on a pool of database threads, `kdf()` on
a pool as wide as the machine for scrypt (which releases the GIL), admitted by a bounded queue
(`KdfGate`: RATE_LIMITED at once when the directory or the client's address has too many hashes
waiting) — and `announce()` a committed write: Redis cache entries deleted, this process's
caches dropped, a CacheInvalidation published; `end_sessions()` publishes SessionsEnd.
Peer sockets: none of its own; `publish` is the node's events PUB; the store's pools and
shard_store's Redis `Cache` are opened and closed by the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from google.protobuf.message import Message

from fabric import timing
from fabric.methods import RpcError
from nodes.directory.caches import L1, L2, L2_TTL_S
from nodes.directory.options import DirectoryOptions
from nodes.directory.throttle import LoginThrottle
from nodes.directory.tokens import TokenSigner
from schema import cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import (
    END_METHOD,
    END_TOPIC,
    INVALIDATION_METHOD,
    INVALIDATION_TOPIC,
)
from shard_store.backend import StoreError, StoreUnavailable
from shard_store.cache import CacheUnavailable
from shard_store.segments import SegmentAllocator
from shard_store.store import Store

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

DB_THREADS = 8
"""Database worker threads (the store's pools hold 8 connections per database)."""
KDF_THREADS = min(os.cpu_count() or 2, 8)
"""scrypt threads: one per core (scrypt releases the GIL), at most 8 — each hash takes 128 MiB
at the default cost."""


class KdfGate:
    """Admission to the KDF pool: at most `total` hashes waiting or running, and at most
    `per_address` of them for one client address (an empty address — soimctl — only counts
    towards the total). Used on the event loop only, so no lock."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self.jobs = 0
        self._by_address: dict[str, int] = {}

    def enter(self, addr: str) -> None:
        """Take a slot, or RpcError(RATE_LIMITED) when none is free."""
        if self.jobs >= self.total:
            raise RpcError(pb.RATE_LIMITED, "too many logins in progress; try again shortly")
        if addr:
            held = self._by_address.get(addr, 0)
            if held >= self.per_address:
                raise RpcError(pb.RATE_LIMITED, "too many logins from this address at once")
            self._by_address[addr] = held + 1
        self.jobs += 1

    def leave(self, addr: str) -> None:
        """Give back the slot `enter(addr)` took."""
        self.jobs -= 1
        if addr:
            held = self._by_address.pop(addr) - 1
            if held:
                self._by_address[addr] = held


@dataclass
class Context:
    """The directory's shared state. Create with `Context(...)`, `close()` when stopping."""

    store: Store
    ids: SegmentAllocator
    options: DirectoryOptions
    signer: TokenSigner
    throttle: LoginThrottle
    publish: Callable[[bytes, str, Message], None]
    l2: L2 | None = None
    l1: L1 = field(default_factory=L1)
    _db_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(DB_THREADS, thread_name_prefix="dir-db")
    )
    _kdf_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(KDF_THREADS, thread_name_prefix="dir-kdf")
    )
    kdf_gate: KdfGate = field(
        default_factory=lambda: KdfGate(
            KDF_THREADS * timing.KDF_QUEUE_JOBS_PER_THREAD, timing.KDF_JOBS_PER_ADDRESS
        )
    )

    async def db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking database (or Redis) work in a database thread.

        A database or Redis that is down is UNAVAILABLE (callers retry idempotent calls); any
        other store failure is INTERNAL. Both are logged here, once.
        """
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._db_pool, functools.partial(fn, *args, **kwargs))
        except (StoreUnavailable, CacheUnavailable) as err:
            log.warning("%s: %s", fn.__name__, err)
            raise RpcError(pb.UNAVAILABLE, "the directory's database is unavailable") from None
        except StoreError as err:
            log.error("%s: %s", fn.__name__, err)
            raise RpcError(pb.INTERNAL, "directory database error") from None

    async def kdf(self, addr: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run password hashing for client address `addr` in a scrypt thread; RATE_LIMITED at
        once, without hashing, when the KDF queue (or this address's share of it) is full."""
        loop = asyncio.get_running_loop()
        self.kdf_gate.enter(addr)
        job = self._kdf_pool.submit(functools.partial(fn, *args, **kwargs))

        def done(_: object) -> None:  # the slot is free when the hash is, not when its caller
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing left to admit
                loop.call_soon_threadsafe(self.kdf_gate.leave, addr)

        job.add_done_callback(done)
        return await asyncio.wrap_future(job)

    async def announce(self, inv: cluster_pb2.CacheInvalidation) -> None:
        """A write has committed: invalidate Redis, then this process, then everyone else.

        The write stands even if Redis cannot be reached: its entries then expire by TTL.
        """
        if self.l2 is not None:
            try:
                await self.db(self.l2.invalidate, inv)
            except RpcError:
                log.warning(
                    "Redis entries of a write not invalidated; they expire in %d s", L2_TTL_S
                )
        self.l1.apply(inv)
        self.publish(INVALIDATION_TOPIC, INVALIDATION_METHOD, inv)

    def end_sessions(
        self, user_ids: list[int], reason: str, keep: cluster_pb2.SessionRef | None = None
    ) -> None:
        """Tell every gateway to end the live sessions of these users now, except `keep`
        (their tokens are already revoked; a gateway that misses this finds out by its token
        audit)."""
        self.publish(
            END_TOPIC,
            END_METHOD,
            cluster_pb2.SessionsEnd(user_ids=user_ids, reason=reason, keep=keep),
        )

    def close(self) -> None:
        """Wait for running work, then stop the pools (the node closes store and Redis)."""
        self._kdf_pool.shutdown(wait=True, cancel_futures=True)
        self._db_pool.shutdown(wait=True, cancel_futures=True)
