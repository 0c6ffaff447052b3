"""Account and user rows: create, find, look up in batches, search by account prefix, and
last-active times.

Role: the SQL of accounts over shard_store — table `account` (by account name: user id and
password hash), table `user` (by user id: account, nickname, disabled, created) and table
`user_seen` (by user id: last_active). shard_store's `user` table has no last-active column,
so the directory keeps those times in `user_seen`, created idempotently at start in every
shard (same shard map, same `create_table_sql` as shard_store's DDL). Blocking: every function
runs in a worker thread. Connections: shard_store's pools, one statement at a time (an account
is rows in two shards; no transaction spans them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fabric.methods import RpcError
from nodes.directory.sharded import IN_CHUNK, by_shard, select_in
from schema import cluster_pb2
from schema import common_pb2 as pb
from shard_store.backend import Conflict
from shard_store.segments import SegmentAllocator
from shard_store.shards import prefix_range
from shard_store.store import Row, Store

SEARCH_LIMIT = 20
_USER_COLUMNS = "user_id, account, nickname, disabled, created"
SEEN_TABLE = "user_seen"
_SEEN_COLUMNS = (("user_id", "id", None), ("last_active", "id", "0"))


@dataclass(frozen=True)
class Credentials:
    """What Login needs of an account."""

    user_id: int
    pw_hash: str


def record(row: Row) -> cluster_pb2.UserRecord:
    """A `user` row (in _USER_COLUMNS order) as a UserRecord."""
    user_id, account, nickname, disabled, created = row
    return cluster_pb2.UserRecord(
        user_id=int(user_id),
        account=account,
        nickname=nickname,
        disabled=bool(disabled),
        created_ms=int(created),
    )


def create(
    store: Store, ids: SegmentAllocator, account: str, nickname: str, pw_hash: str, now_ms: int
) -> cluster_pb2.UserRecord:
    """A new user; ALREADY_EXISTS when the account name is taken.

    The user row is written first and the account row claims the name: a crash in between
    leaves an unreachable user row, never a name pointing at nobody.
    """
    user_id = ids.next_id("user")
    store.execute(
        "user",
        user_id,
        f"INSERT INTO {{t}} ({_USER_COLUMNS}) VALUES (%s, %s, %s, 0, %s)",
        (user_id, account, nickname, now_ms),
    )
    try:
        store.execute(
            "account",
            account,
            "INSERT INTO {t} (account, user_id, pw_hash, created) VALUES (%s, %s, %s, %s)",
            (account, user_id, pw_hash, now_ms),
        )
    except Conflict:
        store.execute("user", user_id, "DELETE FROM {t} WHERE user_id = %s", (user_id,))
        raise RpcError(pb.ALREADY_EXISTS, f"account {account!r} is taken") from None
    return cluster_pb2.UserRecord(
        user_id=user_id, account=account, nickname=nickname, created_ms=now_ms
    )


def credentials(store: Store, account: str) -> Credentials | None:
    """The user id and password hash of `account`, or None when there is no such account."""
    rows = store.query(
        "account", account, "SELECT user_id, pw_hash FROM {t} WHERE account = %s", (account,)
    )
    return Credentials(int(rows[0][0]), rows[0][1]) if rows else None


def users(store: Store, user_ids: Iterable[int]) -> dict[int, cluster_pb2.UserRecord]:
    """The known users among `user_ids`, by id."""
    rows = select_in(store, "user", "user_id", user_ids, _USER_COLUMNS)
    return {int(r[0]): record(r) for r in rows}


def search(store: Store, prefix: str) -> list[tuple[str, int]]:
    """(account, user_id) of the first SEARCH_LIMIT accounts starting with `prefix`, in order."""
    rows = store.scatter(
        "account",
        "SELECT account, user_id FROM {t} WHERE account >= %s AND account < %s",
        prefix_range(prefix),
        order_by="account",
        key=lambda r: r[0],
        limit=SEARCH_LIMIT,
    )
    return [(r[0], int(r[1])) for r in rows]


def set_disabled(store: Store, user_id: int, disabled: bool) -> cluster_pb2.UserRecord | None:
    """Disable or enable a user; its record after the change, None when there is no such user."""
    store.execute(
        "user", user_id, "UPDATE {t} SET disabled = %s WHERE user_id = %s", (int(disabled), user_id)
    )
    return users(store, [user_id]).get(user_id)


def set_password(store: Store, user_id: int, pw_hash: str) -> cluster_pb2.UserRecord | None:
    """Store a new password hash for a user; its record, None when there is no such user."""
    user = users(store, [user_id]).get(user_id)
    if user is not None:
        store.execute(
            "account",
            user.account,
            "UPDATE {t} SET pw_hash = %s WHERE account = %s",
            (pw_hash, user.account),
        )
    return user


def _seen_location(store: Store, user_id: int) -> tuple[int, str]:
    shard = store.shard_map.shard_of(user_id)
    return shard.db, f"`{shard.table(SEEN_TABLE)}`"


def ensure_seen(store: Store) -> None:
    """Create the shard tables of `user_seen` where they are missing."""
    for db in store.databases:
        with db.connection() as conn:
            for shard in store.shard_map.shards(db.index):
                name = shard.table(SEEN_TABLE)
                for sql in db.create_table_sql(name, _SEEN_COLUMNS, ("user_id",), (), ()):
                    conn.execute(sql)


def touch(store: Store, latest: Mapping[int, int]) -> None:
    """Move each user's last-active time forward to the given ms (never back): one upsert per
    shard."""
    for group in by_shard(store, latest):
        db_index, table = _seen_location(store, group[0])
        db = store.databases[db_index]
        for i in range(0, len(group), IN_CHUNK):
            chunk = group[i : i + IN_CHUNK]
            rows = ",".join(["(%s, %s)"] * len(chunk))
            if db.kind == "mysql":
                keep = (
                    "ON DUPLICATE KEY UPDATE "
                    "last_active = GREATEST(last_active, VALUES(last_active))"
                )
            else:
                keep = (
                    "ON CONFLICT(user_id) DO UPDATE "
                    "SET last_active = MAX(last_active, excluded.last_active)"
                )
            with db.connection() as conn:
                conn.execute(
                    f"INSERT INTO {table} (user_id, last_active) VALUES {rows} {keep}",
                    [v for user_id in chunk for v in (user_id, latest[user_id])],
                )


def last_active(store: Store, user_ids: Iterable[int]) -> dict[int, int]:
    """The last-active ms of those of `user_ids` ever touched."""
    out: dict[int, int] = {}
    for group in by_shard(store, user_ids):
        db_index, table = _seen_location(store, group[0])
        with store.databases[db_index].connection() as conn:
            for i in range(0, len(group), IN_CHUNK):
                chunk = group[i : i + IN_CHUNK]
                marks = ",".join(["%s"] * len(chunk))
                rows = conn.query(
                    f"SELECT user_id, last_active FROM {table} WHERE user_id IN ({marks})", chunk
                )
                out.update({int(u): int(t) for u, t in rows})
    return out
