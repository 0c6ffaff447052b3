"""Login throttle: failures counted per key in a window; too many lock the key out for a while.

Role: the brute-force brake of Login (and the per-address brake of Register). Keys are
"pair:<account> <client address>", "addr:<client address>" and "acct:<account>". Five failed
logins of one account from one address within a minute lock that pair for 60 s (LOCKED_OUT,
even with the right password); the owner logging in from another address is not affected.
Fifty failures from one address (any accounts) lock that address. A pair locks after five, so
one address adds at most five failures a minute to an account: the account-wide brake at 50
failures a minute takes ten or more addresses to trip (it then locks the account for everyone
for 60 s). `unlock()` (soimctl user unlock) clears an account's own lock and counts (pair locks
expire by themselves within LOCKOUT_S). A login with no address (none passed) counts as one
address of its own.
With SOIM_REDIS_URL set the counters live in Redis under SOIM_REDIS_PREFIX, so every directory
node shares them; without it they are per process. Calls block on Redis: run them in a worker
thread, as the login path does. With Redis down a login fails UNAVAILABLE (never unthrottled).
Peer sockets: the Redis connection of shard_store's `Cache`, when used.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from shard_store.cache import Cache

PAIR_FAILURES = 5
"""Failed logins of one account from one address within WINDOW_S that lock the pair (the 5th
failure locks)."""
ACCOUNT_FAILURES = 50
"""Failed logins of one account from all addresses within WINDOW_S that lock the account."""
ADDRESS_FAILURES = 50
"""Failed logins from one client address within WINDOW_S (any accounts) that lock it."""
WINDOW_S = 60
"""The window failures are counted in (fixed, from the first failure)."""
LOCKOUT_S = 60
"""How long a key stays locked once it has too many failures."""


class Counters(Protocol):
    """Windowed counters and timed locks, local or shared."""

    def hit(self, key: str, window_s: int) -> int:
        """Count one event for `key`; return the count in its current window."""

    def lock(self, key: str, seconds: int) -> None:
        """Lock `key` for `seconds` and clear its count."""

    def locked(self, key: str) -> bool:
        """Whether `key` is locked now."""

    def clear(self, key: str) -> None:
        """Forget the count of `key` (a lock stays)."""

    def unlock(self, key: str) -> None:
        """Lift the lock of `key` and forget its count."""


class LocalCounters:
    """Per-process counters; thread-safe; expired entries are swept as they pile up."""

    SWEEP_AT = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._mutex = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}
        self._locks: dict[str, float] = {}

    def hit(self, key: str, window_s: int) -> int:
        now = self._clock()
        with self._mutex:
            count, ends = self._counts.get(key, (0, 0.0))
            if ends <= now:
                count, ends = 0, now + window_s
            self._counts[key] = (count + 1, ends)
            if len(self._counts) > self.SWEEP_AT:
                self._sweep(now)
            return count + 1

    def lock(self, key: str, seconds: int) -> None:
        with self._mutex:
            self._locks[key] = self._clock() + seconds
            self._counts.pop(key, None)

    def locked(self, key: str) -> bool:
        with self._mutex:
            until = self._locks.get(key)
            if until is None:
                return False
            if until <= self._clock():
                del self._locks[key]
                return False
            return True

    def clear(self, key: str) -> None:
        with self._mutex:
            self._counts.pop(key, None)

    def unlock(self, key: str) -> None:
        with self._mutex:
            self._counts.pop(key, None)
            self._locks.pop(key, None)

    def _sweep(self, now: float) -> None:
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        self._locks = {k: v for k, v in self._locks.items() if v > now}


class RedisCounters:
    """Counters shared by every directory, in shard_store's Redis cache (atomic INCR + TTL)."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    def hit(self, key: str, window_s: int) -> int:
        return self._cache.incr("throttle:n:" + key, window_s)

    def lock(self, key: str, seconds: int) -> None:
        self._cache.set("throttle:lock:" + key, b"1", seconds)
        self._cache.delete("throttle:n:" + key)

    def locked(self, key: str) -> bool:
        return self._cache.get("throttle:lock:" + key) is not None

    def clear(self, key: str) -> None:
        self._cache.delete("throttle:n:" + key)

    def unlock(self, key: str) -> None:
        self._cache.delete("throttle:lock:" + key)
        self._cache.delete("throttle:n:" + key)


class LoginThrottle:
    """The policy over `Counters`: who is locked, and what a failure or a success does."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def locked(self, account: str, addr: str) -> bool:
        """Whether a login of `account` from `addr` must be refused with LOCKED_OUT now."""
        if self.counters.locked("acct:" + account):
            return True
        if self.counters.locked(_pair(account, addr)):
            return True
        return bool(addr) and self.counters.locked("addr:" + addr)

    def failed(self, account: str, addr: str) -> None:
        """Count a failed login; lock the pair, the address or the account at its limit."""
        self._count("acct:" + account, ACCOUNT_FAILURES)
        self._count(_pair(account, addr), PAIR_FAILURES)
        if addr:
            self._count("addr:" + addr, ADDRESS_FAILURES)

    def succeeded(self, account: str, addr: str) -> None:
        """A correct password clears the failures of its pair (the account-wide count stays:
        the owner's success must not reset a distributed guesser's budget)."""
        self.counters.clear(_pair(account, addr))

    def unlock(self, account: str) -> None:
        """Lift the account-wide lock and forget its count (an operator's `user unlock`)."""
        self.counters.unlock("acct:" + account)

    def register_allowed(self, addr: str, per_min: int) -> bool:
        """Count a registration from `addr`; False when over `per_min` (0: no limit)."""
        if per_min == 0 or not addr:
            return True
        return self.counters.hit("reg:" + addr, 60) <= per_min

    def _count(self, key: str, allowed: int) -> None:
        if self.counters.hit(key, WINDOW_S) >= allowed:
            self.counters.lock(key, LOCKOUT_S)


def _pair(account: str, addr: str) -> str:
    return f"pair:{account} {addr}"
