"""Shard routing: stable and even (property tests), and scatter-gather answers exactly what one
unsharded table would, on both backends and across two MariaDB databases."""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shard_store import Store, prefix_range
from shard_store.schema import ACCOUNT
from shard_store.settings import SettingError
from shard_store.shards import ShardMap

ALPHABET = "abcAB_%é中z"


@given(
    key=st.integers(min_value=0, max_value=2**63 - 1),
    n=st.sampled_from([1, 2, 8, 64]),
    dbs=st.integers(min_value=1, max_value=3),
)
def test_int_routing_is_stable_and_in_range(key: int, n: int, dbs: int) -> None:
    a, b = ShardMap(n, dbs), ShardMap(n, dbs)
    shard = a.shard_of(key)
    assert shard == b.shard_of(key)
    assert shard.index == key % (n * dbs)
    assert 0 <= shard.db < dbs and 0 <= shard.table_no < n
    if dbs == 1:
        assert shard.table_no == key & (n - 1)


@given(key=st.text(max_size=64))
def test_str_routing_is_crc32_of_utf8(key: str) -> None:
    shard = ShardMap(8, 2).shard_of(key)
    assert shard.index == zlib.crc32(key.encode("utf-8", "surrogatepass")) % 16
    assert shard == ShardMap(8, 2).shard_of(key)


def test_routing_never_changes_between_releases() -> None:
    m = ShardMap(8)
    assert [m.shard_of(k).table_no for k in ("alice", "bob", "中文", "")] == [7, 0, 7, 0]
    assert [m.shard_of(k).table_no for k in (1, 8, 1023, 2**62 + 5)] == [1, 0, 7, 5]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    n=st.sampled_from([8, 16, 64]),
    dbs=st.integers(min_value=1, max_value=3),
    strings=st.booleans(),
)
def test_routing_spreads_keys_evenly(seed: int, n: int, dbs: int, strings: bool) -> None:
    rnd = random.Random(seed)
    m = ShardMap(n, dbs)
    keys: list[int | str] = (
        [f"user{rnd.getrandbits(40)}" for _ in range(m.total * 400)]
        if strings
        else [rnd.getrandbits(63) for _ in range(m.total * 400)]
    )
    counts = Counter(m.index_of(k) for k in keys)
    assert len(counts) == m.total
    assert max(counts.values()) < 400 * 1.3 and min(counts.values()) > 400 * 0.7
    sequential = Counter(m.index_of(k) for k in range(1, m.total * 50 + 1))
    assert set(sequential.values()) == {50}  # segment ids are consecutive: exactly even


def test_shards_partition_the_tables() -> None:
    m = ShardMap(4, 3)
    per_db = [m.shards(db) for db in range(3)]
    assert sorted(s.index for part in per_db for s in part) == list(range(12))
    assert all([s.table_no for s in part] == [0, 1, 2, 3] for part in per_db)


def _names(seed: int, count: int) -> list[str]:
    rnd = random.Random(seed)
    names = {"".join(rnd.choices(ALPHABET, k=rnd.randint(1, 6))) for _ in range(count)}
    return sorted(names)


@pytest.fixture
def accounts(store: Store) -> Iterator[tuple[Store, list[str]]]:
    """~1,500 accounts in the account shards and the same rows in one reference table."""
    names = _names(11, 1600)
    home = store.home
    with home.connection() as conn:
        for stmt in home.create_table_sql("account_ref", ACCOUNT.columns, ACCOUNT.primary, (), ()):
            conn.execute(stmt)
        rows = [(name, i, "h", 0) for i, name in enumerate(names)]
        for sql, params in home.insert_statements(
            "account_ref", ("account", "user_id", "pw_hash", "created"), "sis" + "i", rows
        ):
            conn.execute(sql, params)
    for i, name in enumerate(names):
        store.execute(
            "account",
            name,
            "INSERT INTO {t} (account, user_id, pw_hash, created) VALUES (%s, %s, 'h', 0)",
            (name, i),
        )
    yield store, names


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prefix=st.text(ALPHABET, max_size=3), limit=st.integers(min_value=1, max_value=60))
def test_scatter_gather_equals_one_table(
    accounts: tuple[Store, list[str]], prefix: str, limit: int
) -> None:
    store, names = accounts
    got = store.scatter(
        "account",
        "SELECT account, user_id FROM {t} WHERE account >= %s AND account < %s",
        prefix_range(prefix),
        order_by="account",
        key=lambda r: r[0],
        limit=limit,
    )
    with store.home.connection() as conn:
        one = conn.query(
            "SELECT account, user_id FROM account_ref WHERE account >= %s AND "
            "account < %s ORDER BY account LIMIT %s",
            (*prefix_range(prefix), limit),
        )
    assert got == [tuple(r) for r in one]
    assert [r[0] for r in got] == [n for n in names if n.startswith(prefix)][:limit]


def test_scatter_gather_descending(accounts: tuple[Store, list[str]]) -> None:
    store, names = accounts
    got = store.scatter(
        "account",
        "SELECT account FROM {t}",
        (),
        order_by="account",
        key=lambda r: r[0],
        limit=25,
        reverse=True,
    )
    assert [r[0] for r in got] == sorted(names, reverse=True)[:25]


@pytest.mark.mysql
def test_keys_spread_over_two_databases(mysql_dbs: list[str]) -> None:
    url = ",".join(mysql_dbs)
    with Store.open(url, 4) as store:
        assert store.shard_map.total == 8
        for uid in range(1, 41):
            store.execute(
                "user",
                uid,
                "INSERT INTO {t} (user_id, account, created) VALUES (%s, %s, 0)",
                (uid, f"u{uid}"),
            )
        for db in store.databases:
            with db.connection() as conn:
                held = sorted(
                    r[0]
                    for s in store.shard_map.shards(db.index)
                    for r in conn.query(f"SELECT user_id FROM `{s.table('user')}`")
                )
            assert held == [u for u in range(1, 41) if u % 8 % 2 == db.index]
        got = store.scatter(
            "user",
            "SELECT user_id FROM {t} WHERE user_id > %s",
            (10,),
            order_by="user_id",
            key=lambda r: r[0],
            limit=7,
        )
        assert [r[0] for r in got] == list(range(11, 18))
    with pytest.raises(SettingError) as err:
        Store.open(",".join(reversed(mysql_dbs)), 4)
    assert err.value.var == "SOIM_DB" and "original order" in str(err.value)
