"""Redis cache: the optional shared L2 cache (`SOIM_REDIS_URL`) for directory lookups and the
login-throttle counters shared by all directories.

Role: a small get/set/delete/incr-with-ttl wrapper that puts every key under the configured
prefix (`SOIM_REDIS_PREFIX`) and turns Redis failures into one-line `CacheUnavailable` errors
naming SOIM_REDIS_URL. Its socket: one redis-py connection pool to the Redis server, created
here and closed by `close()`. redis-py is imported when a Cache is made: a node without
SOIM_REDIS_URL (the SQLite default of `make run`) never loads it (~8 MB of RSS per process).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from shard_store.backend import StoreError
from shard_store.settings import StoreSettings

if TYPE_CHECKING:
    import redis

SOCKET_TIMEOUT_S = 1.0

_INCR_WITH_TTL = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""
"""Atomic: the first increment starts the window; later ones leave its expiry alone."""

Value = bytes | str | int | float


class CacheUnavailable(StoreError):
    """Redis is down or refused a command; the message names SOIM_REDIS_URL."""

    var = "SOIM_REDIS_URL"


class Cache:
    """Prefixed Redis access. Thread-safe (redis-py pools its connections)."""

    def __init__(
        self, url: str, prefix: str = "soim:", *, timeout_s: float = SOCKET_TIMEOUT_S
    ) -> None:
        import redis  # only here: see the module docstring

        self.prefix = prefix
        self._errors = redis.RedisError
        self._where = url.split("@")[-1]  # never print a password
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._incr = self._client.register_script(_INCR_WITH_TTL)
        try:
            self._client.ping()
        except self._errors as err:
            self._client.close()
            raise self._unavailable(err) from None

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> Cache | None:
        """The cache of SOIM_REDIS_URL, or None when it is not set (in-process caches)."""
        if not settings.redis_url:
            return None
        return cls(settings.redis_url, settings.redis_prefix)

    def get(self, key: str) -> bytes | None:
        """The value of `key`, or None when absent or expired."""
        try:
            value = self._client.get(self.prefix + key)
        except self._errors as err:
            raise self._unavailable(err) from None
        return value if value is None or isinstance(value, bytes) else value.encode()

    def set(self, key: str, value: Value, ttl_s: float | None = None) -> None:
        """Store `value` under `key`, expiring after `ttl_s` seconds (None: never)."""
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        try:
            self._client.set(self.prefix + key, value, px=px)
        except self._errors as err:
            raise self._unavailable(err) from None

    def delete(self, *keys: str) -> int:
        """Remove `keys` (invalidation on write); return how many existed."""
        if not keys:
            return 0
        try:
            return int(self._client.delete(*(self.prefix + k for k in keys)))
        except self._errors as err:
            raise self._unavailable(err) from None

    def incr(self, key: str, ttl_s: float) -> int:
        """Add one to the counter `key`; a new counter expires `ttl_s` seconds after it starts."""
        try:
            return int(self._incr(keys=[self.prefix + key], args=[max(1, int(ttl_s * 1000))]))
        except self._errors as err:
            raise self._unavailable(err) from None

    def ttl(self, key: str) -> float | None:
        """Seconds until `key` expires; None if it has no expiry or does not exist."""
        try:
            ms = int(self._client.pttl(self.prefix + key))
        except self._errors as err:
            raise self._unavailable(err) from None
        return ms / 1000 if ms >= 0 else None

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _unavailable(self, err: redis.RedisError) -> CacheUnavailable:
        text = " ".join(str(err).split()) or type(err).__name__
        return CacheUnavailable(f"SOIM_REDIS_URL: Redis at {self._where}: {text}")

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
