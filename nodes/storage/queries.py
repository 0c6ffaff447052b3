"""The storage node's SQL: message and cursor reads, and forward-only cursor upserts.

Role: every statement the storage node runs besides the batch writer's INSERTs, written once
for both backends except where their dialects differ (row-value lookups, upserts). Most
functions take an open `Conn` and a physical table name; `by_shard` groups keys by database and
table, and `last_seqs_of` / `cursors_of` read many keys across the store with one connection per
database. All run in database threads (the writer's builder thread or a worker of the node).
No sockets: connections come from the store's pools.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from shard_store.backend import Conn
from shard_store.schema import MessageRow
from shard_store.store import Store

MAX_TERMS = 200
"""Keys per statement (UNION ALL branches, IN lists, VALUES rows)."""
MESSAGE_COLUMNS = "conv_id, seq, msg_id, sender, client_msg_id, ts, body, kind, ref_seq, mentions"

Key = tuple[int, int, str]
"""A message's unique key: (conv_id, sender, client_msg_id)."""
CursorRow = tuple[int, int, int, int]
"""(user_id, conv_id, read_seq, delivered_seq)."""
T = TypeVar("T")


def by_shard(
    store: Store, logical: str, keys: Iterable[T], shard_key: Callable[[T], int]
) -> dict[int, dict[str, list[T]]]:
    """`keys` grouped by database index, then by the physical table of `logical` holding them
    (routed by `shard_key(key)`), each in the given order."""
    out: dict[int, dict[str, list[T]]] = {}
    for key in keys:
        loc = store.locate(logical, shard_key(key))
        out.setdefault(loc.db.index, {}).setdefault(loc.table, []).append(key)
    return out


def last_seqs_of(store: Store, conv_ids: Iterable[int]) -> dict[int, int]:
    """MAX(seq) of many conversations, one connection per database."""
    out: dict[int, int] = {}
    for db_index, tables in by_shard(store, "message", dict.fromkeys(conv_ids), int).items():
        with store.databases[db_index].connection() as conn:
            for table, ids in tables.items():
                out.update(last_seqs(conn, table, ids))
    return out


def cursors_of(
    store: Store, pairs: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], tuple[int, int]]:
    """Stored (read, delivered) of many (user_id, conv_id), one connection per database."""
    out: dict[tuple[int, int], tuple[int, int]] = {}
    for db_index, tables in by_shard(store, "cursor", pairs, lambda p: p[0]).items():
        with store.databases[db_index].connection() as conn:
            for table, some in tables.items():
                out.update(cursors(conn, table, some))
    return out


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), MAX_TERMS):
        yield items[i : i + MAX_TERMS]


def last_seqs(conn: Conn, table: str, conv_ids: Sequence[int]) -> dict[int, int]:
    """MAX(seq) of each conversation (0 when it has no message): one index seek each."""
    out: dict[int, int] = {}
    for chunk in _chunks(conv_ids):
        sql = " UNION ALL ".join(
            [f"SELECT %s, MAX(seq) FROM `{table}` WHERE conv_id = %s"] * len(chunk)
        )
        for conv_id, seq in conn.query(sql, [v for c in chunk for v in (c, c)]):
            out[int(conv_id)] = int(seq or 0)
    return out


def messages_by_key(conn: Conn, kind: str, table: str, keys: Sequence[Key]) -> list[MessageRow]:
    """The stored messages among `keys` (by the unique key, without locking anything)."""
    found: list[MessageRow] = []
    for chunk in _chunks(keys):
        params = [v for key in chunk for v in key]
        if kind == "mysql":
            sql = (
                f"SELECT {MESSAGE_COLUMNS} FROM `{table}` WHERE "
                f"(conv_id, sender, client_msg_id) IN ({','.join(['(%s,%s,%s)'] * len(chunk))})"
            )
        else:  # SQLite scans the table for a row-value IN list; a join on VALUES seeks
            cols = ", ".join(f"m.{c}" for c in MESSAGE_COLUMNS.split(", "))
            sql = (
                f"WITH k(kc, ks, km) AS (VALUES {','.join(['(%s,%s,%s)'] * len(chunk))}) "
                f"SELECT {cols} FROM k JOIN `{table}` AS m ON m.conv_id = k.kc "
                "AND m.sender = k.ks AND m.client_msg_id = k.km"
            )
        found += [MessageRow(*rec) for rec in conn.query(sql, params)]
    return found


def history(
    conn: Conn, table: str, conv_id: int, after: int | None, before: int | None, limit: int
) -> tuple[list[MessageRow], bool]:
    """Up to `limit` messages, ascending: after `after`, else the newest before `before` (or
    the newest of all); and whether more lie beyond them."""
    if after is not None:
        rows = conn.query(
            f"SELECT {MESSAGE_COLUMNS} FROM `{table}` WHERE conv_id = %s "
            "AND seq > %s ORDER BY seq LIMIT %s",
            (conv_id, after, limit + 1),
        )
        return [MessageRow(*r) for r in rows[:limit]], len(rows) > limit
    bound = "AND seq < %s " if before is not None else ""
    params = (conv_id, before, limit + 1) if before is not None else (conv_id, limit + 1)
    rows = conn.query(
        f"SELECT {MESSAGE_COLUMNS} FROM `{table}` WHERE conv_id = %s {bound}"
        "ORDER BY seq DESC LIMIT %s",
        params,
    )
    return [MessageRow(*r) for r in reversed(rows[:limit])], len(rows) > limit


def authors(conn: Conn, table: str, conv_id: int, first: int, last: int) -> list[tuple[int, int]]:
    """(seq, sender) of the stored messages first..last of a conversation, ascending."""
    rows = conn.query(
        f"SELECT seq, sender FROM `{table}` WHERE conv_id = %s AND seq >= %s "
        "AND seq <= %s ORDER BY seq",
        (conv_id, first, last),
    )
    return [(int(s), int(u)) for s, u in rows]


def cursors(
    conn: Conn, table: str, pairs: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], tuple[int, int]]:
    """(read_seq, delivered_seq) of the stored cursors among (user_id, conv_id) `pairs`."""
    wanted = set(pairs)
    out: dict[tuple[int, int], tuple[int, int]] = {}
    users = sorted({u for u, _ in wanted})
    convs = sorted({c for _, c in wanted})
    for user_chunk in _chunks(users):
        for conv_chunk in _chunks(convs):
            sql = (
                f"SELECT user_id, conv_id, read_seq, delivered_seq FROM `{table}` WHERE "
                f"user_id IN ({','.join(['%s'] * len(user_chunk))}) AND "
                f"conv_id IN ({','.join(['%s'] * len(conv_chunk))})"
            )
            for user_id, conv_id, read, delivered in conn.query(sql, [*user_chunk, *conv_chunk]):
                key = (int(user_id), int(conv_id))
                if key in wanted:
                    out[key] = (int(read), int(delivered))
    return out


def upsert_cursors(conn: Conn, kind: str, table: str, rows: Sequence[CursorRow]) -> None:
    """Move cursors forward: a stored cursor only grows (MAX of stored and given, per seq)."""
    if kind == "mysql":
        tail = (
            "ON DUPLICATE KEY UPDATE read_seq = GREATEST(read_seq, VALUES(read_seq)), "
            "delivered_seq = GREATEST(delivered_seq, VALUES(delivered_seq))"
        )
    else:
        tail = (
            "ON CONFLICT (user_id, conv_id) DO UPDATE SET "
            "read_seq = MAX(read_seq, excluded.read_seq), "
            "delivered_seq = MAX(delivered_seq, excluded.delivered_seq)"
        )
    for chunk in _chunks(sorted(rows)):  # one lock order for every writer
        values = ",".join([f"({u:d},{c:d},{r:d},{d:d})" for u, c, r, d in chunk])  # ints only
        conn.execute(
            f"INSERT INTO `{table}` (user_id, conv_id, read_seq, delivered_seq) VALUES "
            f"{values} {tail}"
        )
