"""The Redis cache wrapper against the real Redis, under a key prefix of this test's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from shard_store import Cache, CacheUnavailable, StoreSettings
from tests.conftest import REDIS_URL
from tests.support import free_port


@pytest.fixture
def cache(redis_prefix: str) -> Iterator[Cache]:
    with Cache(REDIS_URL, redis_prefix) as c:
        yield c


def test_get_set_delete(cache: Cache) -> None:
    assert cache.get("friend:1:2") is None
    cache.set("friend:1:2", b"77")
    cache.set("n", 5)
    assert cache.get("friend:1:2") == b"77" and cache.get("n") == b"5"
    assert cache.ttl("n") is None
    assert cache.delete("friend:1:2", "n", "missing") == 2
    assert cache.get("friend:1:2") is None and cache.delete() == 0


def test_keys_live_under_the_prefix_with_their_ttl(cache: Cache, redis_prefix: str) -> None:
    cache.set("members:9", "1,2,3", ttl_s=30)
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        assert raw.get(redis_prefix + "members:9") == b"1,2,3"
        assert raw.get("members:9") is None
    finally:
        raw.close()
    ttl = cache.ttl("members:9")
    assert ttl is not None and 0 < ttl <= 30


def test_incr_starts_a_window_that_later_hits_do_not_extend(cache: Cache) -> None:
    assert [cache.incr("login:ann", ttl_s=60) for _ in range(3)] == [1, 2, 3]
    first = cache.ttl("login:ann")
    assert first is not None and 0 < first <= 60
    cache.set("login:ann:probe", 1)  # unrelated key: the window's expiry is left alone
    assert cache.incr("login:ann", ttl_s=3600) == 4
    later = cache.ttl("login:ann")
    assert later is not None and later <= first


def test_from_settings_is_none_without_a_url(redis_prefix: str) -> None:
    assert Cache.from_settings(StoreSettings.from_env({})) is None
    env = {"SOIM_REDIS_URL": REDIS_URL, "SOIM_REDIS_PREFIX": redis_prefix}
    cache = Cache.from_settings(StoreSettings.from_env(env))
    assert cache is not None and cache.prefix == redis_prefix
    cache.close()


def test_redis_down_is_one_line_naming_the_variable() -> None:
    with pytest.raises(CacheUnavailable) as err:
        Cache(f"redis://:secret@127.0.0.1:{free_port()}/0", timeout_s=0.5)
    text = str(err.value)
    assert text.startswith("SOIM_REDIS_URL: Redis at 127.0.0.1:")
    assert "\n" not in text and "secret" not in text
