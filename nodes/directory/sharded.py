"""Batched reads and writes of the directory over shard_store's shard map.

Role: group many keys by the shard that holds them and run one statement per shard (IN lists),
and run a short transaction on the shard of one key. Blocking: callers are worker threads.
Connections: borrowed from shard_store's pools for one statement or one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from shard_store.backend import Conn
from shard_store.store import Row, Store

K = TypeVar("K", int, str)
IN_CHUNK = 500
"""Most keys in one IN list."""
_TABLE_REF = re.compile(r"\{t:(\w+)\}")


def by_shard(store: Store, keys: Iterable[K]) -> list[list[K]]:
    """The distinct `keys` grouped by shard (each group shares one shard), in first-seen order."""
    groups: dict[int, list[K]] = {}
    seen: set[K] = set()
    for key in keys:
        if key not in seen:
            seen.add(key)
            groups.setdefault(store.shard_map.index_of(key), []).append(key)
    return list(groups.values())


def select_in(
    store: Store,
    table: str,
    column: str,
    keys: Iterable[K],
    select: str,
    where: str = "",
    params: Sequence[Any] = (),
    tail: str = "",
) -> list[Row]:
    """`SELECT {select} FROM table WHERE column IN keys [AND where] [tail]` on every shard
    involved (`tail` e.g. a GROUP BY).

    `column` must be the shard key of `table`; `params` fill `where` and go after the keys.
    """
    out: list[Row] = []
    for group in by_shard(store, keys):
        for i in range(0, len(group), IN_CHUNK):
            chunk: list[K] = group[i : i + IN_CHUNK]
            marks = ",".join(["%s"] * len(chunk))
            extra = f" AND {where}" if where else ""
            sql = f"SELECT {select} FROM {{t}} WHERE `{column}` IN ({marks}){extra} {tail}"
            out += store.query(table, chunk[0], sql, [*chunk, *params])
    return out


@contextmanager
def transaction(store: Store, table: str, key: int | str) -> Iterator[ShardTxn]:
    """`with transaction(store, "group", gid) as txn:` a transaction on that shard's database."""
    loc = store.locate(table, key)
    with loc.db.connection() as conn, conn.transaction():
        yield ShardTxn(store, conn, key)


class ShardTxn:
    """One open transaction on the database holding shard `key`; call it to run SQL there.

    `{t:name}` in the SQL names the physical table of logical table `name` in the same shard
    (tables sharded by the same id share a shard and so a database). `lock` is appended to a
    SELECT that must lock what it reads (MySQL `FOR UPDATE`; SQLite's BEGIN IMMEDIATE already
    holds the only write lock).
    """

    def __init__(self, store: Store, conn: Conn, key: int | str) -> None:
        self._store = store
        self._conn = conn
        self._key = key
        self.lock = " FOR UPDATE" if conn.db.kind == "mysql" else ""

    def _sql(self, sql: str) -> str:
        shard = self._store.shard_map.shard_of(self._key)
        return _TABLE_REF.sub(lambda m: f"`{shard.table(m.group(1))}`", sql)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a SELECT in the transaction."""
        return self._conn.query(self._sql(sql), params)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement in the transaction; return the affected rows."""
        return self._conn.execute(self._sql(sql), params)
