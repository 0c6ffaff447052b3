"""Token rows: which signed session tokens still work, shared by every directory.

Role: the SQL of table `token` (by user id: nonce, expiry, successor, claimed;
shard_store.schema.TOKEN). A token is live while its (user_id, nonce) row exists unclaimed:
issuing inserts the row, Logout deletes it (and its successor, if it was resumed), and a
password change, disable or kick deletes every row of the user. Resume inserts the successor's
row first, then claims the old one: marks it with the successor's nonce and the claim time (the
UPDATE's row count decides, so of two racing resumes with one token exactly one wins). A claimed
row stays for a reuse grace (SOIM_TOKEN_REUSE_GRACE_S) so that a resume whose reply was lost
can be repeated: while the successor's row is still live and unclaimed, the old token gets that
same successor again (`successor`) — one chain, never two; after the grace, once the successor
was itself resumed or revoked, it gets nothing. Expired rows and claimed rows past the grace of
a user are swept when that user gets a new token. Batches group tokens by shard: one statement
per shard, not per token, except the claims of a rotation. Blocking: every function runs in a
directory database thread. Connections: shard_store's pools.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nodes.directory.sharded import IN_CHUNK, by_shard, select_in
from shard_store.store import Store

Key = tuple[int, int]
"""(user_id, nonce) of a token."""


def live(store: Store, keys: Iterable[Key]) -> set[Key]:
    """Those of `keys` whose rows exist unclaimed (one SELECT per shard and chunk)."""
    wanted = set(keys)
    nonces: dict[int, set[int]] = {}
    for user_id, nonce in wanted:
        nonces.setdefault(user_id, set()).add(nonce)
    rows = select_in(store, "token", "user_id", nonces, "user_id, nonce", "claimed = 0")
    return {(int(u), int(n)) for u, n in rows} & wanted


def add(store: Store, tokens: Sequence[tuple[int, int, int]], now_ms: int, grace_ms: int) -> None:
    """Record new tokens (user_id, nonce, expires_ms) and sweep their users' expired rows and
    rows claimed more than `grace_ms` ago."""
    by_user: dict[int, list[tuple[int, int, int]]] = {}
    for token in tokens:
        by_user.setdefault(token[0], []).append(token)
    for group in by_shard(store, by_user):
        for i in range(0, len(group), IN_CHUNK):
            chunk = group[i : i + IN_CHUNK]
            marks = ",".join(["%s"] * len(chunk))
            store.execute(
                "token",
                chunk[0],
                f"DELETE FROM {{t}} WHERE user_id IN ({marks}) "
                "AND (expires <= %s OR (claimed > 0 AND claimed < %s))",
                [*chunk, now_ms, now_ms - grace_ms],
            )
            rows = [t for user_id in chunk for t in by_user[user_id]]
            values = ",".join(["(%s, %s, %s)"] * len(rows))
            store.execute(
                "token",
                chunk[0],
                f"INSERT INTO {{t}} (user_id, nonce, expires) VALUES {values}",
                [v for row in rows for v in row],
            )


def claim(store: Store, key: Key, successor: int, now_ms: int) -> bool:
    """Mark one token's row claimed by `successor` (a nonce whose row exists, or 0 for none)
    at `now_ms`; True if this call claimed it (the token was live until now)."""
    return (
        store.execute(
            "token",
            key[0],
            "UPDATE {t} SET successor = %s, claimed = %s "
            "WHERE user_id = %s AND nonce = %s AND claimed = 0",
            (successor, now_ms, *key),
        )
        == 1
    )


def successor(store: Store, key: Key, now_ms: int, grace_ms: int) -> tuple[int, int] | None:
    """(nonce, expires_ms) of the row that replaced `key` if `key` was claimed at most
    `grace_ms` ago and that row is still live and unclaimed; else None."""
    if grace_ms <= 0:
        return None
    rows = store.query(
        "token",
        key[0],
        "SELECT s.nonce, s.expires FROM {t} c JOIN {t} s "
        "ON s.user_id = c.user_id AND s.nonce = c.successor "
        "WHERE c.user_id = %s AND c.nonce = %s AND c.claimed > 0 AND c.claimed >= %s "
        "AND s.claimed = 0 AND s.expires > %s",
        (*key, now_ms - grace_ms, now_ms),
    )
    return (int(rows[0][0]), int(rows[0][1])) if rows else None


def drop(store: Store, keys: Iterable[Key]) -> None:
    """Delete these rows (successors minted for a resume that lost its race)."""
    for key in keys:
        store.execute("token", key[0], "DELETE FROM {t} WHERE user_id = %s AND nonce = %s", key)


def revoke(store: Store, key: Key) -> None:
    """Logout: delete one token's row and, if it was resumed, its successor's."""
    rows = store.query(
        "token",
        key[0],
        "SELECT successor FROM {t} WHERE user_id = %s AND nonce = %s AND claimed > 0",
        key,
    )
    nonces = [key[1], *(int(r[0]) for r in rows)]
    marks = ",".join(["%s"] * len(nonces))
    store.execute(
        "token",
        key[0],
        f"DELETE FROM {{t}} WHERE user_id = %s AND nonce IN ({marks})",
        [key[0], *nonces],
    )


def revoke_all(store: Store, user_id: int) -> int:
    """Delete every token row of `user_id`, claimed or not; how many there were."""
    return store.execute("token", user_id, "DELETE FROM {t} WHERE user_id = %s", (user_id,))
