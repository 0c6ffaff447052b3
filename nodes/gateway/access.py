"""Access checks with a cache: may this user send to that user or group, or read that conversation?

Role: answer batches of (user, target) questions for the gateway — from an in-process cache
of positive answers, and with one batched `Directory.CheckAccess` call for the rest. Cached
answers are dropped when a directory publishes a `CacheInvalidation` (friendship or membership
changed, user disabled); negative answers are never cached, so a new friendship works at once.
Peer sockets: none of its own; the directory is reached through `Upstream`, invalidations
arrive on the node's events SUB (topic "inv").
"""

from __future__ import annotations

from collections.abc import Sequence

from fabric import envelope
from nodes.gateway.upstream import Upstream
from schema import cluster_pb2
from schema import common_pb2 as pb

MAX_CACHED_USERS = 200_000

Key = tuple[str, int]  # ("u" | "g" | "c", target id)


_KINDS = {"to_user": "u", "to_group": "g", "conv_id": "c"}


def key_of(check: cluster_pb2.AccessCheck) -> Key:
    """The cache key of one question (its target kind and id)."""
    which = check.WhichOneof("target") or "conv_id"
    return (_KINDS[which], getattr(check, which))


class AccessCache:
    """Positive access answers by user; fill with `check`, empty with `invalidate`."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._by_user: dict[int, dict[Key, cluster_pb2.AccessResult]] = {}
        self.hits = 0
        self.misses = 0

    def cached(self, user_id: int, target: str, target_id: int) -> cluster_pb2.AccessResult | None:
        """The cached positive answer for `user_id` and a target (`target`: the name of its
        field, "to_user" or "to_group"), counted as a hit; None when none is cached (`check`
        asks and counts the miss)."""
        entries = self._by_user.get(user_id)
        hit = entries.get((_KINDS[target], target_id)) if entries else None
        if hit is not None:
            self.hits += 1
        return hit

    async def check(
        self, checks: Sequence[cluster_pb2.AccessCheck]
    ) -> list[cluster_pb2.AccessResult]:
        """One result per check, in order (error OK, NOT_FRIEND, NOT_MEMBER or NOT_FOUND)."""
        results: list[cluster_pb2.AccessResult | None] = []
        missing: list[int] = []
        for i, check in enumerate(checks):
            hit = self._by_user.get(check.user_id, {}).get(key_of(check))
            results.append(hit)
            if hit is None:
                missing.append(i)
        self.hits += len(checks) - len(missing)
        if missing:
            self.misses += len(missing)
            reply = await self.upstream.directory(
                "CheckAccess", cluster_pb2.AccessRequest(checks=[checks[i] for i in missing])
            )
            if len(self._by_user) > MAX_CACHED_USERS:
                self._by_user.clear()
            for i, result in zip(missing, reply.results, strict=True):
                results[i] = result
                if result.error == pb.OK:
                    check = checks[i]
                    self._by_user.setdefault(check.user_id, {})[key_of(check)] = result
        return [r for r in results if r is not None]

    def on_invalidation(self, topic: bytes, env: envelope.Envelope) -> None:
        """A directory changed something: drop what it names."""
        try:
            batch = envelope.parse_payload(cluster_pb2.CacheInvalidation, env.payload)
        except envelope.EnvelopeError:
            return
        for item in batch.items:
            which = item.WhichOneof("item")
            if which == "friendship":
                f = item.friendship
                for me, other in ((f.user_a, f.user_b), (f.user_b, f.user_a)):
                    entries = self._by_user.get(me, {})
                    entries.pop(("u", other), None)
                    if f.conv_id:
                        entries.pop(("c", f.conv_id), None)
            elif which == "membership":
                m = item.membership
                entries = self._by_user.get(m.user_id, {})
                entries.pop(("g", m.group_id), None)
                entries.pop(("c", m.group_id), None)
            elif which == "user_id":
                self._by_user.pop(item.user_id, None)
