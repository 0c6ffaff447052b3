"""Whole-table reads and bulk loads of the shard store, for `soimctl export` / `soimctl import`.

Role: stream every row of a logical table in primary-key order (keyset pages per shard, merged
across shards, so the order is the same on every backend and shard layout), load rows into
their shards in batched transactions, tell whether a store holds no data, and move the id
allocator past loaded ids. Connections: the Store's pools, one page or one batch at a time.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from shard_store.schema import ID_SEGMENT, TABLES, Table
from shard_store.segments import DEFAULT_STEP
from shard_store.store import Row, Store

PAGE_ROWS = 1000
"""Rows per SELECT page and per load transaction."""

DATA_TABLES = (
    "account",
    "user",
    "friend",
    "user_block",
    "group",
    "group_name",
    "group_member",
    "user_group",
    "group_rule",
    "group_pass",
    "conversation",
    "cursor",
    "message",
)
"""What an export holds, in load order. Not `token`: sessions end, users log in again."""

ID_TAGS = {
    "user": (("user", "user_id"),),
    "conv": (("conversation", "conv_id"), ("friend", "conv_id"), ("group", "group_id")),
    "msg": (("message", "msg_id"),),
}
"""Segment tags and the (table, column) pairs whose ids came from them."""


def columns(table: Table) -> list[str]:
    """The column names of `table`, in DDL order."""
    return [c[0] for c in table.columns]


def kinds(table: Table) -> str:
    """`i`/`s` per column, for the statement builders."""
    return "".join("i" if c[1] in ("id", "int") else "s" for c in table.columns)


def rows(store: Store, name: str) -> Iterator[Row]:
    """Every row of logical table `name`, ordered by its primary key across all shards."""
    table = TABLES[name]
    pk = [columns(table).index(k) for k in table.primary]
    parts = [
        _pages(store, table, db_index, shard.table(name))
        for db_index in range(len(store.databases))
        for shard in store.shard_map.shards(db_index)
    ]
    return heapq.merge(*parts, key=lambda r: tuple(r[i] for i in pk))


def _pages(store: Store, table: Table, db_index: int, physical: str) -> Iterator[Row]:
    """One shard's rows in primary-key order, PAGE_ROWS at a time (keyset pagination)."""
    names = ", ".join(f"`{c}`" for c in columns(table))
    order = ", ".join(f"`{k}`" for k in table.primary)
    pk = [columns(table).index(k) for k in table.primary]
    head = f"SELECT {names} FROM `{physical}`"
    tail = f" ORDER BY {order} LIMIT {PAGE_ROWS}"
    last: tuple[Any, ...] | None = None
    while True:
        with store.databases[db_index].connection() as conn:
            if last is None:
                page = conn.query(head + tail)
            else:
                where, params = _after(table.primary, last)
                page = conn.query(f"{head} WHERE {where}{tail}", params)
        yield from page
        if len(page) < PAGE_ROWS:
            return
        last = tuple(page[-1][i] for i in pk)


def _after(keys: Sequence[str], last: Sequence[Any]) -> tuple[str, list[Any]]:
    """`(k1, k2, …) > last` spelled out with AND/OR, which both backends index well."""
    terms, params = [], []
    for n in range(len(keys)):
        eq = [f"`{k}` = %s" for k in keys[:n]]
        terms.append("(" + " AND ".join([*eq, f"`{keys[n]}` > %s"]) + ")")
        params += [*last[:n], last[n]]
    return " OR ".join(terms), params


def load(store: Store, name: str, records: Iterable[Sequence[Any]]) -> int:
    """Insert `records` (full rows in column order) into their shards; return the count.

    PAGE_ROWS rows per transaction; a key already present raises Conflict.
    """
    table = TABLES[name]
    key_at = columns(table).index(str(table.key))
    pending: defaultdict[tuple[int, str], list[Sequence[Any]]] = defaultdict(list)
    count = 0
    for record in records:
        loc = store.locate(name, record[key_at])
        pending[(loc.db.index, loc.table)].append(record)
        count += 1
        if count % PAGE_ROWS == 0:
            _flush(store, table, pending)
    _flush(store, table, pending)
    return count


def _flush(store: Store, table: Table, pending: dict[tuple[int, str], list[Sequence[Any]]]) -> None:
    by_db: defaultdict[int, list[tuple[str, Any]]] = defaultdict(list)
    for (db_index, physical), batch in pending.items():
        db = store.databases[db_index]
        by_db[db_index] += db.insert_statements(
            physical, columns(table), kinds(table), batch, ignore=False
        )
    pending.clear()
    for db_index, statements in by_db.items():
        with store.databases[db_index].connection() as conn:
            conn.write_batch(statements)


def holdings(store: Store) -> list[str]:
    """The tables (data tables and id_segment) that hold a row; empty for an empty store."""
    out = []
    with store.home.connection() as conn:
        if conn.query("SELECT biz_tag FROM id_segment LIMIT 1"):
            out.append(ID_SEGMENT.name)
    for name in (*DATA_TABLES, "token"):
        for db in store.databases:
            with db.connection() as conn:
                if any(
                    conn.query(f"SELECT 1 FROM `{shard.table(name)}` LIMIT 1")
                    for shard in store.shard_map.shards(db.index)
                ):
                    out.append(name)
                    break
    return out


def segments(store: Store) -> list[Row]:
    """The id_segment rows (biz_tag, max_id, step, version, updated), by tag."""
    with store.home.connection() as conn:
        return conn.query(
            "SELECT biz_tag, max_id, step, version, updated FROM id_segment ORDER BY biz_tag"
        )


def set_segments(store: Store, exported: Iterable[Sequence[Any]], now_ms: int) -> list[Row]:
    """Write id_segment so that every tag continues past both its exported `max_id` and the
    largest id of it now stored; return the rows written. Run on a store no process uses."""
    want: dict[str, list[Any]] = {str(r[0]): [int(r[1]), int(r[2])] for r in exported}
    for tag, sources in ID_TAGS.items():
        top = max(_max_id(store, table, column) for table, column in sources)
        entry = want.setdefault(tag, [0, DEFAULT_STEP])
        entry[0] = max(entry[0], top)
    out = [(tag, max_id, step, 0, now_ms) for tag, (max_id, step) in sorted(want.items())]
    db = store.home
    with db.connection() as conn:
        conn.write_batch(
            [
                ("DELETE FROM id_segment", None),
                *db.insert_statements(
                    "id_segment", columns(ID_SEGMENT), kinds(ID_SEGMENT), out, ignore=False
                ),
            ]
        )
    return out


def _max_id(store: Store, name: str, column: str) -> int:
    top = 0
    for db in store.databases:
        with db.connection() as conn:
            for shard in store.shard_map.shards(db.index):
                value = conn.query(f"SELECT MAX(`{column}`) FROM `{shard.table(name)}`")[0][0]
                top = max(top, int(value or 0))
    return top
