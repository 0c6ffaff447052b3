"""Block rows: who has blocked whom.

Role: the SQL of table `user_block` (by user_id; one row in each user's shard: (A, B, mine=1)
"A blocks B" is the truth, read when B sends to A or asks to befriend A; (B, A, mine=0) "B is
blocked by A" is its mirror, read to hide A's presence from B). Blocking writes the truth first
and unblocking deletes it first, so a crash between the two statements leaves at worst a stale
mirror (presence hidden or shown a little wrongly) that a repeat of the command repairs.
Blocking: every function runs in a worker thread. Connections: shard_store's pools, one
statement at a time.
"""

from __future__ import annotations

from collections.abc import Iterable

from nodes.directory.sharded import select_in
from shard_store.store import Store

Pair = tuple[int, int]
"""(blocker, blocked)."""


def block(store: Store, me: int, other: int, now_ms: int) -> None:
    """`me` blocks `other`; blocking twice leaves one block."""
    for user_id, other_id, mine in ((me, other, 1), (other, me, 0)):
        ignore = store.locate("user_block", user_id).db.insert_ignore
        store.execute(
            "user_block",
            user_id,
            f"{ignore} INTO {{t}} (user_id, other_id, mine, created) VALUES (%s, %s, %s, %s)",
            (user_id, other_id, mine, now_ms),
        )


def unblock(store: Store, me: int, other: int) -> None:
    """`me` no longer blocks `other` (nothing happens if it did not)."""
    for user_id, other_id, mine in ((me, other, 1), (other, me, 0)):
        store.execute(
            "user_block",
            user_id,
            "DELETE FROM {t} WHERE user_id = %s AND other_id = %s AND mine = %s",
            (user_id, other_id, mine),
        )


def blocked(store: Store, pairs: Iterable[Pair]) -> set[Pair]:
    """The (blocker, blocked) pairs among `pairs` that are blocks (from the blockers' rows)."""
    wanted = set(pairs)
    if not wanted:
        return set()
    rows = select_in(
        store, "user_block", "user_id", [b for b, _ in wanted], "user_id, other_id", "mine = 1"
    )
    return {p for r in rows if (p := (int(r[0]), int(r[1]))) in wanted}


def of_user(store: Store, user_id: int, mine: bool) -> list[int]:
    """Whom `user_id` blocks (`mine`), or who blocks `user_id` (not `mine`), ascending."""
    rows = store.query(
        "user_block",
        user_id,
        "SELECT other_id FROM {t} WHERE user_id = %s AND mine = %s ORDER BY other_id",
        (user_id, int(mine)),
    )
    return [int(r[0]) for r in rows]


def forget(store: Store, user_id: int) -> None:
    """Remove every block by or of `user_id` (its account is being deleted)."""
    for mine in (True, False):
        for other in of_user(store, user_id, mine):
            store.execute(
                "user_block",
                other,
                "DELETE FROM {t} WHERE user_id = %s AND other_id = %s",
                (other, user_id),
            )
    store.execute("user_block", user_id, "DELETE FROM {t} WHERE user_id = %s", (user_id,))
