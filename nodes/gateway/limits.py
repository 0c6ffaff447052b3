"""Token buckets of a gateway: how fast a connection, an address and a user may talk.

Role: the rate limits of the client plane — before login per connection and per source address
(Register/Login/Resume: each may cost the directory a password hash), after login per user
over all its sessions (so resuming on many connections does not multiply a user's rate). Each
kind keeps at most timing.LIMITER_MAX_KEYS buckets; past that, full buckets are forgotten (a
full bucket limits nothing). No sockets.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from fabric import timing


@dataclass(slots=True)
class Bucket:
    """`tokens` of at most `burst`, refilled at `per_s`."""

    tokens: float
    refilled: float


class Limiter:
    """One token bucket per key (a connection, an address, a user)."""

    def __init__(self, per_s: float, burst: float) -> None:
        self.per_s = per_s
        self.burst = burst
        self._buckets: dict[Hashable, Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, now: float) -> bool:
        """Take one token from `key`'s bucket; False when it is empty."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= timing.LIMITER_MAX_KEYS:
                self._forget_full(now)
            bucket = self._buckets[key] = Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.refilled) * self.per_s)
            bucket.refilled = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def forget(self, key: Hashable) -> None:
        """Drop `key`'s bucket (its connection is gone)."""
        self._buckets.pop(key, None)

    def _forget_full(self, now: float) -> None:
        refill = self.per_s
        for key in [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.refilled) * refill >= self.burst
        ]:
            del self._buckets[key]
        if len(self._buckets) >= timing.LIMITER_MAX_KEYS:  # all busy: start over
            self._buckets.clear()
