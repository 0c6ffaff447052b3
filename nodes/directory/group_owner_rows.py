"""What a group's owner does to its members: remove one, hand the group to one.

Role: the SQL of the owner's acts over shard_store's tables `group` and `group_member` (by group
id: one transaction checks the owner and changes the group) and `user_group` (the removed
member's own index, through `group_rows.leave`). Blocking: every function runs in a worker
thread. Connections: shard_store's pools.
"""

from __future__ import annotations

from fabric.methods import RpcError
from nodes.directory import group_rows
from nodes.directory.group_rows import GroupRow
from nodes.directory.sharded import ShardTxn, transaction
from schema import common_pb2 as pb
from shard_store.store import Store


def kick(store: Store, group_id: int, owner: int, member: int) -> None:
    """The owner removes `member`. Errors: NOT_FOUND, FORBIDDEN, INVALID_ARGUMENT, NOT_MEMBER."""
    with transaction(store, "group", group_id) as txn:
        _check_owner(txn, group_id, owner, "removes members")
    if member == owner:
        raise RpcError(pb.INVALID_ARGUMENT, "you own the group: hand it over, then leave it")
    try:
        group_rows.leave(store, group_id, member)
    except RpcError as err:
        if err.code == pb.NOT_MEMBER:
            raise RpcError(pb.NOT_MEMBER, "they are not a member") from None
        raise


def hand_over(store: Store, group_id: int, owner: int, heir: int) -> GroupRow:
    """The owner makes the member `heir` the owner. Errors: NOT_FOUND, FORBIDDEN, NOT_MEMBER."""
    with transaction(store, "group", group_id) as txn:
        _check_owner(txn, group_id, owner, "hands it over")
        if not txn.query(
            "SELECT 1 FROM {t:group_member} WHERE group_id = %s AND user_id = %s", (group_id, heir)
        ):
            raise RpcError(pb.NOT_MEMBER, "they are not a member")
        txn.execute("UPDATE {t:group} SET owner = %s WHERE group_id = %s", (heir, group_id))
    return group_rows.groups(store, [group_id])[group_id]


def _check_owner(txn: ShardTxn, group_id: int, owner: int, act: str) -> None:
    """NOT_FOUND without the group, FORBIDDEN unless `owner` owns it (the row stays locked)."""
    rows = txn.query(f"SELECT owner FROM {{t:group}} WHERE group_id = %s{txn.lock}", (group_id,))
    if not rows:
        raise RpcError(pb.NOT_FOUND, f"no group {group_id}")
    if int(rows[0][0]) != owner:
        raise RpcError(pb.FORBIDDEN, f"only the group's owner {act}")
