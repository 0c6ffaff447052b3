"""Group rows: create, find, search, join, leave, members, a user's groups, rules, invitations.

Role: the SQL of groups over shard_store — `group`, `group_member`, `group_rule` (visibility and
history rule) and `group_pass` (an invitation, then the member's history floor) — all by group
id, so in one shard and one database (with the group's `message` table too): joins are one
transaction there —, `group_name` (by name: the unique claim of a name) and `user_group` (by
user id: a member's own index of its groups, written after the membership and only ever a mirror
of it). Blocking: every function runs in a worker thread. Connections: shard_store's pools.

Rules: an invite-only group is joined only with a pass its owner made (`invite`), and listed by
`search` only to its members; a member of a group with history from join reads only the seqs
above the floor recorded at the join (the group's last stored seq then). A message committed
while the join runs may fall on either side of the floor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from fabric.methods import RpcError
from nodes.directory.sharded import select_in, transaction
from schema import client_pb2
from schema import common_pb2 as pb
from shard_store.backend import Conflict
from shard_store.segments import SegmentAllocator
from shard_store.shards import prefix_range
from shard_store.store import Row, Store

SEARCH_LIMIT = 20
SEARCH_PAGES = 5
"""GroupSearch reads at most this many pages of SEARCH_LIMIT names to fill its answer with
groups the asker may see."""
_COLUMNS = "group_id, name, owner, user_limit, created"
PUBLIC, INVITE_ONLY = client_pb2.GROUP_PUBLIC, client_pb2.GROUP_INVITE_ONLY
FROM_JOIN, ALL = client_pb2.GROUP_HISTORY_FROM_JOIN, client_pb2.GROUP_HISTORY_ALL
LEGACY_RULE = (PUBLIC, ALL)
"""The rule of a group without a group_rule row (created before schema v4)."""


@dataclass(frozen=True)
class GroupRow:
    """One group with its member count."""

    group_id: int
    name: str
    owner: int
    user_limit: int
    created_ms: int
    members: int
    visibility: int = PUBLIC
    history: int = ALL


def create(
    store: Store,
    ids: SegmentAllocator,
    owner: int,
    name: str,
    user_limit: int,
    visibility: int,
    history: int,
    now_ms: int,
) -> GroupRow:
    """A new group owned by (and with the one member) `owner`; ALREADY_EXISTS for a taken name.

    Its id is a conv_id: the group is its conversation.
    """
    group_id = ids.next_id("conv")
    try:
        store.execute(
            "group_name", name, "INSERT INTO {t} (name, group_id) VALUES (%s, %s)", (name, group_id)
        )
    except Conflict:
        raise RpcError(pb.ALREADY_EXISTS, f"group name {name!r} is taken") from None
    with transaction(store, "group", group_id) as txn:
        txn.execute(
            f"INSERT INTO {{t:group}} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s)",
            (group_id, name, owner, user_limit, now_ms),
        )
        txn.execute(
            "INSERT INTO {t:group_member} (group_id, user_id, joined) VALUES (%s, %s, %s)",
            (group_id, owner, now_ms),
        )
        txn.execute(
            "INSERT INTO {t:group_rule} (group_id, visibility, history, updated) "
            "VALUES (%s, %s, %s, %s)",
            (group_id, visibility, history, now_ms),
        )
    _index(store, owner, group_id, now_ms)
    return GroupRow(group_id, name, owner, user_limit, now_ms, 1, visibility, history)


def groups(store: Store, group_ids: Iterable[int]) -> dict[int, GroupRow]:
    """The known groups among `group_ids`, with member counts, by id."""
    wanted = list(group_ids)
    rows = select_in(store, "group", "group_id", wanted, _COLUMNS)
    return _with_counts(store, rows)


def search(store: Store, prefix: str, user_id: int) -> list[GroupRow]:
    """The first SEARCH_LIMIT groups whose name starts with `prefix` that `user_id` may see
    (public ones, and invite-only ones it is a member of), ordered by name."""
    lo, hi = prefix_range(prefix)
    mine = set(of_user(store, user_id))
    out: list[GroupRow] = []
    sql = f"SELECT {_COLUMNS} FROM {{t}} WHERE name >= %s AND name < %s"
    for _ in range(SEARCH_PAGES):
        rows = store.scatter(
            "group", sql, (lo, hi), order_by="name", key=lambda r: r[1], limit=SEARCH_LIMIT
        )
        found = _with_counts(store, rows)
        out += [
            g
            for g in (found[int(r[0])] for r in rows)
            if g.visibility != INVITE_ONLY or g.group_id in mine
        ]
        if len(rows) < SEARCH_LIMIT or len(out) >= SEARCH_LIMIT:
            break
        sql = f"SELECT {_COLUMNS} FROM {{t}} WHERE name > %s AND name < %s"
        lo = rows[-1][1]
    return out[:SEARCH_LIMIT]


def page(store: Store, after: int, limit: int) -> list[GroupRow]:
    """Up to `limit` groups with ids above `after`, ascending by id (every shard)."""
    rows = store.scatter(
        "group",
        f"SELECT {_COLUMNS} FROM {{t}} WHERE group_id > %s",
        (after,),
        order_by="group_id",
        key=lambda r: int(r[0]),
        limit=limit,
    )
    found = _with_counts(store, rows)
    return [found[int(r[0])] for r in rows]


def join(store: Store, group_id: int, user_id: int, now_ms: int) -> GroupRow:
    """Add `user_id` to the group; errors NOT_FOUND, ALREADY_MEMBER, GROUP_FULL, FORBIDDEN
    (invite-only and no invitation; the owner needs none).

    The group row is locked while members are counted, so racing joins never pass the limit.
    The member's pass records the group's last stored seq as its history floor.
    """
    with transaction(store, "group", group_id) as txn:
        rows = txn.query(
            f"SELECT {_COLUMNS} FROM {{t:group}} WHERE group_id = %s{txn.lock}", (group_id,)
        )
        if not rows:
            raise RpcError(pb.NOT_FOUND, f"no group {group_id}")
        count, mine = txn.query(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN user_id = %s THEN 1 ELSE 0 END), 0) "
            "FROM {t:group_member} WHERE group_id = %s",
            (user_id, group_id),
        )[0]
        rule = txn.query(
            "SELECT visibility, history FROM {t:group_rule} WHERE group_id = %s", (group_id,)
        )
        row = _group(rows[0], int(count), _rule(rule[0]) if rule else LEGACY_RULE)
        if mine:
            raise RpcError(pb.ALREADY_MEMBER, "you are a member already")
        passes = txn.query(
            "SELECT invited_by FROM {t:group_pass} WHERE group_id = %s AND user_id = %s",
            (group_id, user_id),
        )
        if row.visibility == INVITE_ONLY and user_id != row.owner and not passes:
            raise RpcError(pb.FORBIDDEN, "this group is invite-only: ask its owner to invite you")
        if row.members >= row.user_limit:
            raise RpcError(pb.GROUP_FULL, f"the group has its {row.user_limit} members")
        [(last,)] = txn.query("SELECT MAX(seq) FROM {t:message} WHERE conv_id = %s", (group_id,))
        txn.execute(
            "INSERT INTO {t:group_member} (group_id, user_id, joined) VALUES (%s, %s, %s)",
            (group_id, user_id, now_ms),
        )
        txn.execute(
            "DELETE FROM {t:group_pass} WHERE group_id = %s AND user_id = %s", (group_id, user_id)
        )
        txn.execute(
            "INSERT INTO {t:group_pass} (group_id, user_id, invited_by, floor_seq, "
            "updated) VALUES (%s, %s, %s, %s, %s)",
            (group_id, user_id, int(passes[0][0]) if passes else 0, int(last or 0), now_ms),
        )
    _index(store, user_id, group_id, now_ms)
    return replace(row, members=row.members + 1)


def leave(store: Store, group_id: int, user_id: int) -> None:
    """Remove `user_id` from the group; errors NOT_FOUND, NOT_MEMBER."""
    if not store.query("group", group_id, "SELECT 1 FROM {t} WHERE group_id = %s", (group_id,)):
        raise RpcError(pb.NOT_FOUND, f"no group {group_id}")
    with transaction(store, "group", group_id) as txn:
        gone = txn.execute(
            "DELETE FROM {t:group_member} WHERE group_id = %s AND user_id = %s", (group_id, user_id)
        )
        txn.execute(
            "DELETE FROM {t:group_pass} WHERE group_id = %s AND user_id = %s", (group_id, user_id)
        )
    store.execute(
        "user_group",
        user_id,
        "DELETE FROM {t} WHERE user_id = %s AND group_id = %s",
        (user_id, group_id),
    )
    if not gone:
        raise RpcError(pb.NOT_MEMBER, "you are not a member")


def members(store: Store, group_ids: Iterable[int]) -> dict[int, list[int]]:
    """The member ids (ascending) of each known group among `group_ids`."""
    wanted = list(group_ids)
    out: dict[int, list[int]] = {
        int(r[0]): [] for r in select_in(store, "group", "group_id", wanted, "group_id")
    }
    for group_id, user_id in select_in(
        store, "group_member", "group_id", list(out), "group_id, user_id"
    ):
        out[int(group_id)].append(int(user_id))
    for ids in out.values():
        ids.sort()
    return out


def of_user(store: Store, user_id: int) -> list[int]:
    """The ids of the groups `user_id` is a member of (from its own index)."""
    rows = store.query(
        "user_group", user_id, "SELECT group_id FROM {t} WHERE user_id = %s", (user_id,)
    )
    return [int(r[0]) for r in rows]


def settings(
    store: Store, group_id: int, user_id: int, visibility: int, history: int, now_ms: int
) -> tuple[GroupRow, bool]:
    """The owner `user_id` sets the group's rule (0 leaves a part); returns the group and
    whether its history rule changed. Errors: NOT_FOUND, FORBIDDEN."""
    with transaction(store, "group", group_id) as txn:
        rows = txn.query(
            f"SELECT {_COLUMNS} FROM {{t:group}} WHERE group_id = %s{txn.lock}", (group_id,)
        )
        if not rows:
            raise RpcError(pb.NOT_FOUND, f"no group {group_id}")
        rule = txn.query(
            "SELECT visibility, history FROM {t:group_rule} WHERE group_id = %s", (group_id,)
        )
        old = _rule(rule[0]) if rule else LEGACY_RULE
        if int(rows[0][2]) != user_id:
            raise RpcError(pb.FORBIDDEN, "only the group's owner changes its settings")
        new = (visibility or old[0], history or old[1])
        txn.execute("DELETE FROM {t:group_rule} WHERE group_id = %s", (group_id,))
        txn.execute(
            "INSERT INTO {t:group_rule} (group_id, visibility, history, updated) "
            "VALUES (%s, %s, %s, %s)",
            (group_id, *new, now_ms),
        )
    found = _with_counts(store, rows)[group_id]
    return found, new[1] != old[1]


def invite(store: Store, group_id: int, owner: int, invitee: int, now_ms: int) -> None:
    """The owner invites `invitee` (a known user); errors NOT_FOUND, FORBIDDEN, ALREADY_MEMBER.
    Inviting twice leaves one pass."""
    with transaction(store, "group", group_id) as txn:
        rows = txn.query("SELECT owner FROM {t:group} WHERE group_id = %s", (group_id,))
        if not rows:
            raise RpcError(pb.NOT_FOUND, f"no group {group_id}")
        if int(rows[0][0]) != owner:
            raise RpcError(pb.FORBIDDEN, "only the group's owner invites")
        if txn.query(
            "SELECT 1 FROM {t:group_member} WHERE group_id = %s AND user_id = %s",
            (group_id, invitee),
        ):
            raise RpcError(pb.ALREADY_MEMBER, "they are a member already")
        if not txn.query(
            "SELECT 1 FROM {t:group_pass} WHERE group_id = %s AND user_id = %s", (group_id, invitee)
        ):
            txn.execute(
                "INSERT INTO {t:group_pass} (group_id, user_id, invited_by, floor_seq, "
                "updated) VALUES (%s, %s, %s, 0, %s)",
                (group_id, invitee, owner, now_ms),
            )


def floors(store: Store, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """The history floor of each (group_id, user_id) member pair: its pass's floor_seq when the
    group's history is from join, else 0 (pairs without a pass get 0)."""
    wanted = set(pairs)
    groups = {g for g, _ in wanted}
    from_join = {
        int(g)
        for g, h in select_in(store, "group_rule", "group_id", groups, "group_id, history")
        if int(h) == FROM_JOIN
    }
    out = dict.fromkeys(wanted, 0)
    if from_join:
        for g, u, floor in select_in(
            store, "group_pass", "group_id", from_join, "group_id, user_id, floor_seq"
        ):
            if (int(g), int(u)) in out:
                out[(int(g), int(u))] = int(floor)
    return out


def _index(store: Store, user_id: int, group_id: int, now_ms: int) -> None:
    ignore = store.locate("user_group", user_id).db.insert_ignore
    store.execute(
        "user_group",
        user_id,
        f"{ignore} INTO {{t}} (user_id, group_id, joined) VALUES (%s, %s, %s)",
        (user_id, group_id, now_ms),
    )


def _with_counts(store: Store, rows: list[Row]) -> dict[int, GroupRow]:
    ids = [int(r[0]) for r in rows]
    counts = {
        int(g): int(n)
        for g, n in select_in(
            store, "group_member", "group_id", ids, "group_id, COUNT(*)", tail="GROUP BY group_id"
        )
    }
    rules = {
        int(r[0]): _rule(r[1:])
        for r in select_in(store, "group_rule", "group_id", ids, "group_id, visibility, history")
    }
    return {
        int(r[0]): _group(r, counts.get(int(r[0]), 0), rules.get(int(r[0]), LEGACY_RULE))
        for r in rows
    }


def _rule(r: Row) -> tuple[int, int]:
    return int(r[0]), int(r[1])


def _group(r: Row, members: int, rule: tuple[int, int]) -> GroupRow:
    group_id, name, owner, user_limit, created = r
    return GroupRow(int(group_id), name, int(owner), int(user_limit), int(created), members, *rule)
