"""Operator work on whole accounts: list them in name order, and delete one.

Role: the SQL of `soimctl user list` and `soimctl user delete` over shard_store — tables
`account` (by name), `user` (by id), `token`, `friend` and `user_block` (by user id, one row
per direction), `group`/`group_member`/`group_pass` (by group id) and `user_group` (by user id).
Blocking: every function runs in a worker thread. Connections: shard_store's pools, one
statement or one group transaction at a time.

A deletion spans many shards and no transaction covers them, so its steps are ordered to be
safe when cut short and finished by a repeat: tokens and the account name go first (nobody can
log in as the user any more), then friendships and memberships, and the user row is turned into
a tombstone last. The tombstone keeps the id of every stored message pointing at something:
its account reads `deleted#<id>` (a name no account can take, as `#` is not allowed in one)
and it is disabled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nodes.directory import block_rows, friend_rows, group_rows, token_rows
from nodes.directory.sharded import transaction
from schema import cluster_pb2
from shard_store.shards import prefix_range
from shard_store.store import Store

DELETED = "deleted#"
"""The account of a deleted user's tombstone is this and its id."""


@dataclass
class Removed:
    """What a deletion removed: the other users and groups whose caches must drop it."""

    friends: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    handed_over: list[int] = field(default_factory=list)


def is_deleted(user: cluster_pb2.UserRecord) -> bool:
    """Whether this record is a deleted user's tombstone."""
    return user.account.startswith(DELETED)


def page(store: Store, prefix: str, after: str, limit: int) -> list[int]:
    """User ids of the first `limit` accounts above `after` starting with `prefix`, in name
    order (every shard, merged)."""
    lo, hi = prefix_range(prefix)
    rows = store.scatter(
        "account",
        "SELECT account, user_id FROM {t} WHERE account >= %s AND account < %s AND account > %s",
        (lo, hi, after),
        order_by="account",
        key=lambda r: r[0],
        limit=limit,
    )
    return [int(r[1]) for r in rows]


def delete(store: Store, user: cluster_pb2.UserRecord) -> Removed:
    """Delete `user` (found in the user table, possibly a tombstone of an earlier try)."""
    user_id = user.user_id
    token_rows.revoke_all(store, user_id)
    if not is_deleted(user):
        store.execute(
            "account",
            user.account,
            "DELETE FROM {t} WHERE account = %s AND user_id = %s",
            (user.account, user_id),
        )
    removed = Removed()
    for row in friend_rows.of_user(store, user_id):
        store.execute(
            "friend",
            row.friend_id,
            "DELETE FROM {t} WHERE user_id = %s AND friend_id = %s",
            (row.friend_id, user_id),
        )
        removed.friends.append(row.friend_id)
    store.execute("friend", user_id, "DELETE FROM {t} WHERE user_id = %s", (user_id,))
    block_rows.forget(store, user_id)
    for group_id in group_rows.of_user(store, user_id):
        if _leave(store, group_id, user_id):
            removed.handed_over.append(group_id)
        removed.groups.append(group_id)
    store.execute("user_group", user_id, "DELETE FROM {t} WHERE user_id = %s", (user_id,))
    store.execute(
        "user",
        user_id,
        "UPDATE {t} SET account = %s, nickname = '', disabled = 1 WHERE user_id = %s",
        (f"{DELETED}{user_id}", user_id),
    )
    return removed


def _leave(store: Store, group_id: int, user_id: int) -> bool:
    """Take `user_id` out of one group; if it owned the group, the member who joined first
    owns it now (nobody when none is left). True when ownership passed to someone."""
    with transaction(store, "group", group_id) as txn:
        txn.execute(
            "DELETE FROM {t:group_member} WHERE group_id = %s AND user_id = %s", (group_id, user_id)
        )
        txn.execute(
            "DELETE FROM {t:group_pass} WHERE group_id = %s AND user_id = %s", (group_id, user_id)
        )
        owned = txn.query(
            f"SELECT owner FROM {{t:group}} WHERE group_id = %s{txn.lock}", (group_id,)
        )
        if not owned or int(owned[0][0]) != user_id:
            return False
        heir = txn.query(
            "SELECT user_id FROM {t:group_member} WHERE group_id = %s "
            "ORDER BY joined, user_id LIMIT 1",
            (group_id,),
        )
        new_owner = int(heir[0][0]) if heir else 0
        txn.execute("UPDATE {t:group} SET owner = %s WHERE group_id = %s", (new_owner, group_id))
        return bool(new_owner)
