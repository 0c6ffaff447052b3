"""Message retention: delete messages older than a cut-off, shard by shard, in small batches.

Role: the store side of `soimctl history purge`. Each batch picks up to BATCH_ROWS old rows of
one message shard (keyset order on the primary key, so a batch never rescans rows it kept) and
deletes them in one short transaction, one range per conversation. `conversation.last_seq` and
the read cursors are left alone: new messages keep increasing seqs, and History below the purge
answers nothing. Connections: the Store's pools, one batch at a time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from shard_store.backend import Database, Statement
from shard_store.store import Store

BATCH_ROWS = 1000
"""Most rows deleted in one transaction."""


@dataclass(frozen=True)
class Progress:
    """One committed batch: where, how many rows, and the running total."""

    db: str
    table: str
    deleted: int
    total: int


def purge(store: Store, before_ms: int, conv_id: int | None = None) -> Iterator[Progress]:
    """Delete messages with ts < `before_ms` (of conversation `conv_id` only, if given),
    yielding after every committed batch."""
    total = 0
    if conv_id is None:
        targets = [
            (db, shard.table("message"))
            for db in store.databases
            for shard in store.shard_map.shards(db.index)
        ]
    else:
        loc = store.locate("message", conv_id)
        targets = [(loc.db, loc.table)]
    for db, table in targets:
        for deleted in _purge_table(db, table, before_ms, conv_id):
            total += deleted
            yield Progress(db.spec.display, table, deleted, total)


def _purge_table(db: Database, table: str, before_ms: int, conv_id: int | None) -> Iterator[int]:
    after = (-1, -1)
    only = "" if conv_id is None else f" AND conv_id = {int(conv_id)}"
    while True:
        with db.connection() as conn:
            keys = conn.query(
                f"SELECT conv_id, seq FROM `{table}` WHERE ts < %s{only} AND "
                "(conv_id > %s OR (conv_id = %s AND seq > %s)) "
                f"ORDER BY conv_id, seq LIMIT {BATCH_ROWS}",
                (before_ms, after[0], after[0], after[1]),
            )
            if not keys:
                return
            spans: defaultdict[int, list[int]] = defaultdict(list)
            for conv, seq in keys:
                spans[int(conv)].append(int(seq))
            statements: list[Statement] = [
                (
                    f"DELETE FROM `{table}` WHERE conv_id = %s AND seq >= %s AND seq <= %s "
                    "AND ts < %s",
                    (conv, seqs[0], seqs[-1], before_ms),
                )
                for conv, seqs in spans.items()
            ]
            deleted = sum(conn.write_batch(statements))
        yield deleted
        if len(keys) < BATCH_ROWS:
            return
        after = (int(keys[-1][0]), int(keys[-1][1]))
