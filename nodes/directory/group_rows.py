"""Group rows: create, find, search, join, leave, members, and a user's groups.

Role: the SQL of groups over shard_store — `group` and `group_member` (both by group id, so in
one shard and one database: joins are one transaction there), `group_name` (by name: the unique
claim of a name) and `user_group` (by user id: a member's own index of its groups, written after
the membership and only ever a mirror of it). Blocking: every function runs in a worker thread.
Connections: shard_store's pools.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fabric.methods import RpcError
from nodes.directory.sharded import select_in, transaction
from schema import common_pb2 as pb
from shard_store.backend import Conflict
from shard_store.segments import SegmentAllocator
from shard_store.shards import prefix_range
from shard_store.store import Row, Store

SEARCH_LIMIT = 20
_COLUMNS = "group_id, name, owner, user_limit, created"


@dataclass(frozen=True)
class GroupRow:
    """One group with its member count."""

    group_id: int
    name: str
    owner: int
    user_limit: int
    created_ms: int
    members: int


def create(store: Store, ids: SegmentAllocator, owner: int, name: str, user_limit: int,
           now_ms: int) -> GroupRow:
    """A new group owned by (and with the one member) `owner`; ALREADY_EXISTS for a taken name.

    Its id is a conv_id: the group is its conversation.
    """
    group_id = ids.next_id("conv")
    try:
        store.execute("group_name", name, "INSERT INTO {t} (name, group_id) VALUES (%s, %s)",
                      (name, group_id))
    except Conflict:
        raise RpcError(pb.ALREADY_EXISTS, f"group name {name!r} is taken") from None
    with transaction(store, "group", group_id) as txn:
        txn.execute(f"INSERT INTO {{t:group}} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s)",
                    (group_id, name, owner, user_limit, now_ms))
        txn.execute("INSERT INTO {t:group_member} (group_id, user_id, joined) VALUES (%s, %s, %s)",
                    (group_id, owner, now_ms))
    _index(store, owner, group_id, now_ms)
    return GroupRow(group_id, name, owner, user_limit, now_ms, 1)


def groups(store: Store, group_ids: Iterable[int]) -> dict[int, GroupRow]:
    """The known groups among `group_ids`, with member counts, by id."""
    wanted = list(group_ids)
    rows = select_in(store, "group", "group_id", wanted, _COLUMNS)
    return _with_counts(store, rows)


def search(store: Store, prefix: str) -> list[GroupRow]:
    """The first SEARCH_LIMIT groups whose name starts with `prefix`, ordered by name."""
    rows = store.scatter("group", f"SELECT {_COLUMNS} FROM {{t}} WHERE name >= %s AND name < %s",
                         prefix_range(prefix), order_by="name", key=lambda r: r[1],
                         limit=SEARCH_LIMIT)
    found = _with_counts(store, rows)
    return [found[int(r[0])] for r in rows]


def page(store: Store, after: int, limit: int) -> list[GroupRow]:
    """Up to `limit` groups with ids above `after`, ascending by id (every shard)."""
    rows = store.scatter("group", f"SELECT {_COLUMNS} FROM {{t}} WHERE group_id > %s", (after,),
                         order_by="group_id", key=lambda r: int(r[0]), limit=limit)
    found = _with_counts(store, rows)
    return [found[int(r[0])] for r in rows]


def join(store: Store, group_id: int, user_id: int, now_ms: int) -> GroupRow:
    """Add `user_id` to the group; errors NOT_FOUND, ALREADY_MEMBER, GROUP_FULL.

    The group row is locked while members are counted, so racing joins never pass the limit.
    """
    with transaction(store, "group", group_id) as txn:
        rows = txn.query(f"SELECT {_COLUMNS} FROM {{t:group}} WHERE group_id = %s{txn.lock}",
                         (group_id,))
        if not rows:
            raise RpcError(pb.NOT_FOUND, f"no group {group_id}")
        count, mine = txn.query(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN user_id = %s THEN 1 ELSE 0 END), 0) "
            "FROM {t:group_member} WHERE group_id = %s", (user_id, group_id))[0]
        row = _group(rows[0], int(count))
        if mine:
            raise RpcError(pb.ALREADY_MEMBER, "you are a member already")
        if row.members >= row.user_limit:
            raise RpcError(pb.GROUP_FULL, f"the group has its {row.user_limit} members")
        txn.execute("INSERT INTO {t:group_member} (group_id, user_id, joined) VALUES (%s, %s, %s)",
                    (group_id, user_id, now_ms))
    _index(store, user_id, group_id, now_ms)
    return GroupRow(row.group_id, row.name, row.owner, row.user_limit, row.created_ms,
                    row.members + 1)


def leave(store: Store, group_id: int, user_id: int) -> None:
    """Remove `user_id` from the group; errors NOT_FOUND, NOT_MEMBER."""
    if not store.query("group", group_id, "SELECT 1 FROM {t} WHERE group_id = %s", (group_id,)):
        raise RpcError(pb.NOT_FOUND, f"no group {group_id}")
    gone = store.execute("group_member", group_id,
                         "DELETE FROM {t} WHERE group_id = %s AND user_id = %s",
                         (group_id, user_id))
    store.execute("user_group", user_id, "DELETE FROM {t} WHERE user_id = %s AND group_id = %s",
                  (user_id, group_id))
    if not gone:
        raise RpcError(pb.NOT_MEMBER, "you are not a member")


def members(store: Store, group_ids: Iterable[int]) -> dict[int, list[int]]:
    """The member ids (ascending) of each known group among `group_ids`."""
    wanted = list(group_ids)
    out: dict[int, list[int]] = {
        int(r[0]): [] for r in select_in(store, "group", "group_id", wanted, "group_id")}
    for group_id, user_id in select_in(store, "group_member", "group_id", list(out),
                                       "group_id, user_id"):
        out[int(group_id)].append(int(user_id))
    for ids in out.values():
        ids.sort()
    return out


def of_user(store: Store, user_id: int) -> list[int]:
    """The ids of the groups `user_id` is a member of (from its own index)."""
    rows = store.query("user_group", user_id, "SELECT group_id FROM {t} WHERE user_id = %s",
                       (user_id,))
    return [int(r[0]) for r in rows]


def _index(store: Store, user_id: int, group_id: int, now_ms: int) -> None:
    ignore = store.locate("user_group", user_id).db.insert_ignore
    store.execute("user_group", user_id,
                  f"{ignore} INTO {{t}} (user_id, group_id, joined) VALUES (%s, %s, %s)",
                  (user_id, group_id, now_ms))


def _with_counts(store: Store, rows: list[Row]) -> dict[int, GroupRow]:
    ids = [int(r[0]) for r in rows]
    counts = {int(g): int(n) for g, n in select_in(
        store, "group_member", "group_id", ids, "group_id, COUNT(*)", tail="GROUP BY group_id")}
    return {int(r[0]): _group(r, counts.get(int(r[0]), 0)) for r in rows}


def _group(r: Row, members: int) -> GroupRow:
    group_id, name, owner, user_limit, created = r
    return GroupRow(int(group_id), name, int(owner), int(user_limit), int(created), members)
