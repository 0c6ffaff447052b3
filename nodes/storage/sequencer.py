"""The storage node's sequencer: per-conversation seqs and dedup of retried sends.

Role: the `shard_store.batch_writer.Sequencer` of the node's writer. In the writer's builder
thread of each database, just before a batch's SQL is built, it stamps every row with the next
seq of its conversation and settles retried sends — same conversation, sender and
client_msg_id — without writing them again: a retry of a row still in flight follows that row's
future (acked with the same seq and msg_id when it commits, failed when it fails), a retry of a
stored row resolves to it. The writer makes a failed flush roll back (see its module doc): the
sequencer then forgets the conversations involved and loads them again.

A conversation's state is loaded on first use: its last seq (MAX(seq), an index seek) and, when
it has no message yet, the knowledge that every key it will ever hold passes through here, so no
database lookup is needed for its dedup. Otherwise, keys not seen since the load are looked up
in the database before stamping (one query per shard table per batch). Memory is bounded: keys
of settled rows are evicted beyond MAX_KEYS per conversation (the conversation then looks keys
up in the database), idle conversations beyond MAX_CONVS per database.
No sockets: reads on a pooled connection of the builder's database.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from nodes.storage import queries
from shard_store.backend import Database, FlushFailed
from shard_store.batch_writer import Item
from shard_store.schema import MESSAGE, MessageRow

MAX_KEYS = 4096
"""Settled keys remembered per conversation (retries of older sends are looked up)."""
MAX_CONVS = 100_000
"""Conversations remembered per database (idle ones are dropped and loaded again on use)."""

BATCH_ROWS = Histogram("soim_storage_batch_rows", "Rows stamped per write batch",
                       buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000))
LOADS = Counter("soim_storage_sequencer_loads_total",
                "Conversations whose last seq was loaded from the database")
LOOKUPS = Counter("soim_storage_sequencer_lookups_total",
                  "Sends looked up by their key in the database before stamping")
RETRIES = Counter("soim_storage_sequencer_retries_total",
                  "Retried sends settled by the sequencer without a write")

_Key = tuple[int, str]
"""(sender, client_msg_id) within one conversation."""


@dataclass(slots=True)
class _Conv:
    """What the sequencer knows of one conversation."""

    next_seq: int
    complete: bool
    """Every key the conversation holds is in `keys` (it was empty when loaded, none evicted)."""
    keys: dict[_Key, Future[MessageRow]] = field(default_factory=dict)
    last: Future[MessageRow] | None = None
    """The future of the last row stamped: once it is done, nothing of this conversation is
    in flight (flushes of a database settle in order)."""


class Sequencer:
    """Seqs and dedup for the writer's builder threads (one state per database)."""

    def __init__(self, max_keys: int = MAX_KEYS, max_convs: int = MAX_CONVS) -> None:
        self.max_keys = max_keys
        self.max_convs = max_convs
        self._lanes: dict[int, OrderedDict[int, _Conv]] = {}

    def conversations(self) -> int:
        """Conversations held, over all databases (approximate while builders run)."""
        return sum(len(convs) for convs in list(self._lanes.values()))

    def forget(self, db: Database, conv_ids: Collection[int] | None) -> None:
        convs = self._lane(db)
        if conv_ids is None:
            convs.clear()
            return
        for conv_id in conv_ids:
            convs.pop(conv_id, None)

    def assign(self, db: Database, items: list[Item]) -> list[Item]:
        convs = self._lane(db)
        self._load(db, convs, items)
        out: list[Item] = []
        for row, table_no, fut in items:
            conv = convs[row.conv_id]
            key = (row.sender, row.client_msg_id)
            prior = conv.keys.get(key)
            if prior is not None:
                _follow(prior, fut)
                RETRIES.inc()
                continue
            out.append((row._replace(seq=conv.next_seq), table_no, fut))
            conv.next_seq += 1
            conv.keys[key] = fut
            conv.last = fut
        self._trim(convs, {row.conv_id for row, _, _ in items})
        BATCH_ROWS.observe(len(out))
        return out

    def _lane(self, db: Database) -> OrderedDict[int, _Conv]:
        convs = self._lanes.get(db.index)
        if convs is None:
            convs = self._lanes[db.index] = OrderedDict()
        return convs

    def _load(self, db: Database, convs: OrderedDict[int, _Conv], items: list[Item]) -> None:
        """Load unknown conversations, then look up keys their states cannot vouch for."""
        unknown: dict[str, list[int]] = {}
        for row, table_no, _ in items:
            if row.conv_id not in convs:
                unknown.setdefault(f"{MESSAGE.name}_{table_no}", []).append(row.conv_id)
        if not unknown and all(convs[row.conv_id].complete for row, _, _ in items):
            return
        with db.connection() as conn:
            for table, conv_ids in unknown.items():
                for conv_id, last in queries.last_seqs(conn, table, list(dict.fromkeys(conv_ids))
                                                       ).items():
                    convs[conv_id] = _Conv(next_seq=last + 1, complete=last == 0)
                    LOADS.inc()
            lookup: dict[str, dict[queries.Key, None]] = {}
            for row, table_no, _ in items:
                conv = convs[row.conv_id]
                if not conv.complete and (row.sender, row.client_msg_id) not in conv.keys:
                    keys = lookup.setdefault(f"{MESSAGE.name}_{table_no}", {})
                    keys[(row.conv_id, row.sender, row.client_msg_id)] = None
            for table, keys in lookup.items():
                LOOKUPS.inc(len(keys))
                for stored in queries.messages_by_key(conn, db.kind, table, list(keys)):
                    done: Future[MessageRow] = Future()
                    done.set_result(stored)
                    convs[stored.conv_id].keys[(stored.sender, stored.client_msg_id)] = done

    def _trim(self, convs: OrderedDict[int, _Conv], used: set[int]) -> None:
        for conv_id in used:
            convs.move_to_end(conv_id)
            conv = convs[conv_id]
            if len(conv.keys) > self.max_keys:
                keys = conv.keys
                while len(keys) > self.max_keys:
                    oldest = next(iter(keys))
                    if not keys[oldest].done():
                        break  # still in flight: keep it, evict once it settled
                    del keys[oldest]
                    conv.complete = False
        for _ in range(len(convs) - self.max_convs):
            conv_id, conv = next(iter(convs.items()))
            if conv.last is not None and not conv.last.done():
                break  # the least recently used is still in flight; trim later
            del convs[conv_id]


def _follow(original: Future[MessageRow], retry: Future[MessageRow]) -> None:
    """Settle `retry` as `original` settles (at once if it already has)."""

    def copy(done: Future[MessageRow]) -> None:
        with suppress(InvalidStateError):
            if done.cancelled():
                retry.set_exception(FlushFailed("the original send was cancelled; retry"))
            elif (err := done.exception()) is not None:
                retry.set_exception(err)
            else:
                retry.set_result(done.result())

    original.add_done_callback(copy)
