"""The directory's caches of access facts: friendship → conv_id, a user's direct conversations,
group → member ids, and blocks (in process only).

Role: answer CheckAccess, GroupMembers and GroupUsers without a database round trip. L1 is
in-process (LRU, a short TTL as a backstop), touched only on the event loop; an optional L2 in
Redis (SOIM_REDIS_URL) is shared by every directory and touched only from worker threads.
Every write path invalidates: Redis keys first (from the writer's thread, after COMMIT), then
this process's L1, then a CacheInvalidation event on topic "inv" tells every other directory
(and gateway) to drop its L1. A load that raced an invalidation is not cached (epoch check).
Peer sockets: none of its own; events go out on the node's PUB and come in on its SUB; the
Redis connection of shard_store's `Cache` when L2 is on.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from schema import cluster_pb2
from shard_store.cache import Cache, CacheUnavailable

log = logging.getLogger(__name__)
L1_TTL_S = 30.0
"""An L1 entry lives at most this long even if an invalidation event was lost."""
L1_MAX_ENTRIES = 100_000
"""Per cache; the least recently used entries go first."""
L2_TTL_S = 60
"""A Redis entry lives at most this long."""

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Pair = tuple[int, int]
"""A friendship: (smaller user id, larger user id)."""
Members = tuple[int, ...] | None
"""A group's member ids, ascending; None when there is no such group."""


def pair(a: int, b: int) -> Pair:
    """The cache key of the friendship of `a` and `b`."""
    return (a, b) if a < b else (b, a)


class Lru(Generic[K, V]):
    """A bounded LRU with a TTL per entry. Not thread-safe: use it on the event loop."""

    def __init__(
        self,
        ttl_s: float = L1_TTL_S,
        max_entries: int = L1_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> tuple[bool, V | None]:
        """(True, value) on a hit, (False, None) on a miss or an expired entry."""
        item = self._items.get(key)
        if item is None:
            return False, None
        if item[0] <= self._clock():
            del self._items[key]
            return False, None
        self._items.move_to_end(key)
        return True, item[1]

    def put(self, key: K, value: V) -> None:
        self._items[key] = (self._clock() + self._ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def drop(self, key: K) -> None:
        self._items.pop(key, None)


class L1:
    """The in-process caches and the epoch that guards them against racing loads."""

    def __init__(self) -> None:
        self.friendships: Lru[Pair, int] = Lru()
        self.direct: Lru[int, dict[int, int]] = Lru()
        self.members: Lru[int, Members] = Lru()
        self.blocks: Lru[Pair, bool] = Lru()
        """(blocker, blocked) → whether it is a block; dropped with the pair's friendship."""
        self.epoch = 0

    def apply(self, inv: cluster_pb2.CacheInvalidation) -> None:
        """Drop what `inv` names."""
        self.epoch += 1
        for item in inv.items:
            which = item.WhichOneof("item")
            if which == "friendship":
                f = item.friendship
                self.friendships.drop(pair(f.user_a, f.user_b))
                self.direct.drop(f.user_a)
                self.direct.drop(f.user_b)
                self.blocks.drop((f.user_a, f.user_b))
                self.blocks.drop((f.user_b, f.user_a))
            elif which == "membership":
                self.members.drop(item.membership.group_id)


class L2:
    """The shared Redis cache of friendships and group members (blocking: worker threads), in
    shard_store's `Cache` (keys under SOIM_REDIS_PREFIX).

    Reads and fills are best effort: with Redis unreachable they miss and skip, and lookups go
    to the database. `invalidate` raises, so the writer knows (see Context.announce).
    """

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    def friendships(self, pairs: list[Pair]) -> dict[Pair, int]:
        """The cached conv_id (0: not friends) of those of `pairs` that are cached."""
        values = self._get([_fkey(p) for p in pairs])
        return {p: int(v) for p, v in zip(pairs, values, strict=True) if v is not None}

    def put_friendships(self, found: dict[Pair, int]) -> None:
        self._set({_fkey(p): str(conv_id).encode() for p, conv_id in found.items()})

    def members(self, group_ids: list[int]) -> dict[int, Members]:
        """The cached member lists of those of `group_ids` that are cached."""
        values = self._get([_gkey(g) for g in group_ids])
        return {g: _unpack(v) for g, v in zip(group_ids, values, strict=True) if v is not None}

    def put_members(self, found: dict[int, Members]) -> None:
        self._set({_gkey(g): _pack(ids) for g, ids in found.items()})

    def invalidate(self, inv: cluster_pb2.CacheInvalidation) -> None:
        """Delete the Redis entries `inv` names (before it is published)."""
        keys: list[str] = []
        for item in inv.items:
            which = item.WhichOneof("item")
            if which == "friendship":
                keys.append(_fkey(pair(item.friendship.user_a, item.friendship.user_b)))
            elif which == "membership":
                keys.append(_gkey(item.membership.group_id))
        self._cache.delete(*keys)

    def _get(self, keys: list[str]) -> list[bytes | None]:
        try:
            return [self._cache.get(k) for k in keys]
        except CacheUnavailable as err:
            log.warning("Redis cache read skipped: %s", err)
            return [None] * len(keys)

    def _set(self, items: dict[str, bytes]) -> None:
        try:
            for key, value in items.items():
                self._cache.set(key, value, L2_TTL_S)
        except CacheUnavailable as err:
            log.warning("Redis cache fill skipped: %s", err)


def _fkey(p: Pair) -> str:
    return f"dir:fr:{p[0]}:{p[1]}"


def _gkey(group_id: int) -> str:
    return f"dir:gm:{group_id}"


def _pack(ids: Members) -> bytes:
    return b"-" if ids is None else ",".join(map(str, ids)).encode("ascii")


def _unpack(raw: bytes) -> Members:
    if raw == b"-":
        return None
    return tuple(int(x) for x in raw.split(b",")) if raw else ()


def friendship_changed(a: int, b: int, conv_id: int = 0) -> cluster_pb2.CacheInvalidation:
    """The invalidation of one friendship write."""
    return cluster_pb2.CacheInvalidation(
        items=[
            cluster_pb2.Invalidation(
                friendship=cluster_pb2.FriendshipChanged(user_a=a, user_b=b, conv_id=conv_id)
            )
        ]
    )


def membership_changed(group_id: int, user_id: int, member: bool) -> cluster_pb2.CacheInvalidation:
    """The invalidation of one membership write."""
    return cluster_pb2.CacheInvalidation(
        items=[
            cluster_pb2.Invalidation(
                membership=cluster_pb2.MembershipChanged(
                    group_id=group_id, user_id=user_id, member=member
                )
            )
        ]
    )
