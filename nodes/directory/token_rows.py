"""Token rows: which signed session tokens still work, shared by every directory.

Role: the SQL of table `token` (by user id: nonce, expiry; shard_store.schema.TOKEN). A token
is live while its (user_id, nonce) row exists: issuing inserts the row, Logout deletes it,
Resume swaps it for a new one (the DELETE's row count decides, so of two racing resumes with
one token exactly one wins), and a password change, disable or kick deletes every row of the
user. Expired rows of a user are swept when that user gets a new token. Batches group tokens
by shard: one statement per shard, not per token, except the claims of a rotation. Blocking:
every function runs in a directory database thread. Connections: shard_store's pools.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nodes.directory.sharded import IN_CHUNK, by_shard, select_in
from shard_store.store import Store

Key = tuple[int, int]
"""(user_id, nonce) of a token."""


def live(store: Store, keys: Iterable[Key]) -> set[Key]:
    """Those of `keys` whose rows exist (one SELECT per shard and chunk)."""
    wanted = set(keys)
    nonces: dict[int, set[int]] = {}
    for user_id, nonce in wanted:
        nonces.setdefault(user_id, set()).add(nonce)
    rows = select_in(store, "token", "user_id", nonces, "user_id, nonce")
    return {(int(u), int(n)) for u, n in rows} & wanted


def add(store: Store, tokens: Sequence[tuple[int, int, int]], now_ms: int) -> None:
    """Record new tokens (user_id, nonce, expires_ms) and sweep expired rows of their users."""
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
                f"DELETE FROM {{t}} WHERE user_id IN ({marks}) AND expires <= %s",
                [*chunk, now_ms],
            )
            rows = [t for user_id in chunk for t in by_user[user_id]]
            values = ",".join(["(%s, %s, %s)"] * len(rows))
            store.execute(
                "token",
                chunk[0],
                f"INSERT INTO {{t}} (user_id, nonce, expires) VALUES {values}",
                [v for row in rows for v in row],
            )


def claim(store: Store, key: Key) -> bool:
    """Delete one token's row; True if this call deleted it (the token was live until now)."""
    return (
        store.execute("token", key[0], "DELETE FROM {t} WHERE user_id = %s AND nonce = %s", key)
        == 1
    )


def revoke_all(store: Store, user_id: int) -> int:
    """Delete every token of `user_id`; how many there were."""
    return store.execute("token", user_id, "DELETE FROM {t} WHERE user_id = %s", (user_id,))
