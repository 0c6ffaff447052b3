"""Friendship rows: request, accept, list, and the conversation of two friends.

Role: the SQL of table `friend` (by user_id; one row per direction: user_id, friend_id,
conv_id, state pending/accepted, requested_by): request, accept, remove (unfriend, withdraw,
decline). Blocking: every function runs in a worker
thread. Connections: shard_store's pools, one statement at a time.

The two rows of a friendship usually live in two shards, so no transaction covers both. The
row held by the smaller user id (the *canonical* row) is the truth and changes only by
conditional statements: created pending by INSERT IGNORE, turned accepted by
`UPDATE … WHERE state = 'pending'` (so two racing accepts get one conv_id). The other row is a
mirror, written after the canonical one and only ever moved forward (pending → accepted), so a
late mirror write can never undo an accept; any AddFriend on the pair repairs a mirror a crash
left behind.

While a request is pending, the canonical row's `created` is when the other user was last sent
a notice of it: a repeated request notifies again only once NOTICE_EVERY_MS has passed, and
moves `created` forward by a conditional UPDATE (so of racing repeats one notifies).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from fabric.methods import RpcError
from nodes.directory.sharded import IN_CHUNK
from schema import common_pb2 as pb
from shard_store.schema import FRIEND_ACCEPTED, FRIEND_PENDING
from shard_store.segments import SegmentAllocator
from shard_store.store import Row, Store

_COLUMNS = "user_id, friend_id, conv_id, state, requested_by, created"
NOTICE_EVERY_MS = 24 * 3600 * 1000
"""A pending request sends the other user at most one notice in this long."""


class Outcome(enum.Enum):
    """What AddFriend did."""

    REQUESTED = 1
    """A request is pending, and the other user is to be sent a notice of it."""
    REPEATED = 3
    """A request was pending already and its last notice is less than a day old."""
    ACCEPTED = 2


@dataclass(frozen=True)
class FriendRow:
    """One direction of a friendship, as its owner `user_id` sees it."""

    user_id: int
    friend_id: int
    conv_id: int
    accepted: bool
    requested_by: int
    created_ms: int
    """Pending: when the last notice of the request went out; accepted: when it was asked."""


def add(
    store: Store, ids: SegmentAllocator, me: int, other: int, now_ms: int
) -> tuple[Outcome, int]:
    """Request `other`'s friendship or accept their request; returns (outcome, conv_id).

    Asking again while a request is pending leaves one request (REPEATED, or REQUESTED when
    the last notice is NOTICE_EVERY_MS old). Errors:
    SELF_FRIEND, ALREADY_FRIENDS. The caller has checked that `other` exists.
    """
    if me == other:
        raise RpcError(pb.SELF_FRIEND, "you cannot befriend yourself")
    lo, hi = min(me, other), max(me, other)
    row = _canonical(store, lo, hi)
    if row is None:
        created = store.execute(
            "friend", lo, _insert(store, "friend", lo), (lo, hi, 0, FRIEND_PENDING, me, now_ms)
        )
        if created:
            _mirror(store, hi, lo, 0, me, now_ms)
            return Outcome.REQUESTED, 0
        row = _canonical(store, lo, hi)
        if row is None:
            raise RpcError(pb.UNAVAILABLE, "the friendship changed meanwhile; retry")
    if row.accepted:
        _mirror(store, hi, lo, row.conv_id, row.requested_by, now_ms)
        raise RpcError(pb.ALREADY_FRIENDS, "you are friends already")
    if row.requested_by == me:
        _mirror(store, hi, lo, 0, me, now_ms)
        return _renotify(store, row, now_ms), 0
    conv_id = ids.next_id("conv")
    won = store.execute(
        "friend",
        lo,
        "UPDATE {t} SET state = %s, conv_id = %s "
        "WHERE user_id = %s AND friend_id = %s AND state = %s",
        (FRIEND_ACCEPTED, conv_id, lo, hi, FRIEND_PENDING),
    )
    if not won:
        raise RpcError(pb.ALREADY_FRIENDS, "you are friends already")
    _mirror(store, hi, lo, conv_id, row.requested_by, now_ms)
    return Outcome.ACCEPTED, conv_id


def _renotify(store: Store, row: FriendRow, now_ms: int) -> Outcome:
    """REQUESTED if a new notice of the pending `row` is due (and this call claimed it)."""
    if now_ms - row.created_ms < NOTICE_EVERY_MS:
        return Outcome.REPEATED
    claimed = store.execute(
        "friend",
        row.user_id,
        "UPDATE {t} SET created = %s WHERE user_id = %s "
        "AND friend_id = %s AND state = %s AND created = %s",
        (now_ms, row.user_id, row.friend_id, FRIEND_PENDING, row.created_ms),
    )
    return Outcome.REQUESTED if claimed else Outcome.REPEATED


def remove(store: Store, me: int, other: int, decline: bool) -> int:
    """End the friendship or pending request of `me` and `other` (with `decline`, only a
    request `other` sent); returns its conv_id (0 for a request). Deletes the canonical row,
    then the mirror, so a repeat cleans up a mirror a crash left behind. Errors: NOT_FOUND."""
    lo, hi = min(me, other), max(me, other)
    row = _canonical(store, lo, hi)
    if row is not None and decline and (row.accepted or row.requested_by != other):
        raise RpcError(pb.NOT_FOUND, "they have not asked to be your friend")
    gone = 0
    for user_id, friend_id in ((lo, hi), (hi, lo)):
        gone += store.execute(
            "friend",
            user_id,
            "DELETE FROM {t} WHERE user_id = %s AND friend_id = %s",
            (user_id, friend_id),
        )
    if not gone:
        raise RpcError(pb.NOT_FOUND, "no friendship or request with them")
    return row.conv_id if row is not None else 0


def of_user(store: Store, user_id: int) -> list[FriendRow]:
    """Every friend and pending request of `user_id` (its own rows)."""
    rows = store.query(
        "friend", user_id, f"SELECT {_COLUMNS} FROM {{t}} WHERE user_id = %s", (user_id,)
    )
    return [_row(r) for r in rows]


def conversations(store: Store, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """conv_id of each accepted friendship among `pairs` (as (smaller, larger) user ids).

    Reads the canonical rows only; a pair that is not an accepted friendship is absent.
    """
    out: dict[tuple[int, int], int] = {}
    shard_of = store.shard_map.index_of
    groups: dict[int, list[tuple[int, int]]] = {}
    for pair in set(pairs):
        groups.setdefault(shard_of(pair[0]), []).append(pair)
    for group in groups.values():
        for i in range(0, len(group), IN_CHUNK):
            chunk = group[i : i + IN_CHUNK]
            match = " OR ".join(["(user_id = %s AND friend_id = %s)"] * len(chunk))
            rows = store.query(
                "friend",
                chunk[0][0],
                f"SELECT user_id, friend_id, conv_id FROM {{t}} WHERE state = %s AND ({match})",
                [FRIEND_ACCEPTED, *(v for pair in chunk for v in pair)],
            )
            out.update({(int(lo), int(hi)): int(conv) for lo, hi, conv in rows})
    return out


def _canonical(store: Store, lo: int, hi: int) -> FriendRow | None:
    rows = store.query(
        "friend",
        lo,
        f"SELECT {_COLUMNS} FROM {{t}} WHERE user_id = %s AND friend_id = %s",
        (lo, hi),
    )
    return _row(rows[0]) if rows else None


def _mirror(
    store: Store, user_id: int, friend_id: int, conv_id: int, requested_by: int, now_ms: int
) -> None:
    """Bring the mirror row up to the canonical state: created if absent, never moved back."""
    if conv_id:
        store.execute(
            "friend",
            user_id,
            "UPDATE {t} SET state = %s, conv_id = %s WHERE user_id = %s AND friend_id = %s",
            (FRIEND_ACCEPTED, conv_id, user_id, friend_id),
        )
    state = FRIEND_ACCEPTED if conv_id else FRIEND_PENDING
    store.execute(
        "friend",
        user_id,
        _insert(store, "friend", user_id),
        (user_id, friend_id, conv_id, state, requested_by, now_ms),
    )


def _insert(store: Store, table: str, key: int) -> str:
    ignore = store.locate(table, key).db.insert_ignore
    return f"{ignore} INTO {{t}} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"


def _row(r: Row) -> FriendRow:
    user_id, friend_id, conv_id, state, requested_by, created = r
    return FriendRow(
        int(user_id),
        int(friend_id),
        int(conv_id),
        state == FRIEND_ACCEPTED,
        int(requested_by),
        int(created),
    )
