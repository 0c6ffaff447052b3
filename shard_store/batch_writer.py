"""Batch writer: group commit of message rows. `submit(row)` returns a Future that resolves only
after the COMMIT that made the row durable.

Role: the one place where messages become durable. Each database of SOIM_DB gets a lane
(`shard_store.writer_lane`) of two threads fed by a pending list: a committer that runs each
flush — one multi-row INSERT IGNORE per shard table — in one transaction and then resolves its
futures, and a builder. An idle committer takes the pending rows and builds their flush itself
(an idle writer flushes at once, with no thread hand-off between — under a steady load, its last
flush taken less than LINGER_RECENT_S ago, it lets rows gather for `linger_ms` first); while a
commit is in flight rows accumulate and the committer takes them when it ends, unless they reach
`max_rows` first or rows were already waiting as it began: then the builder seals the next batch
at `max_rows` rows or `max_ms` after its first row, whichever comes first, its SQL built while
the commit still runs. Rows of one conversation share a lane, so they commit in submission
order.

Outcome of a row:
- inserted: the future resolves to the row itself;
- ignored, and its unique key (conv_id, sender, client_msg_id) holds another row: a duplicate;
  the future resolves to the row already stored (its seq and msg_id differ from the submitted);
- ignored, but nothing is stored under its unique key: its (conv_id, seq) belongs to a different
  message; the future fails with SeqClash and the row is never acknowledged;
- the flush failed (lost or killed connection, lock timeout, ...): every future of the flush
  fails with FlushFailed, the transaction rolls back and the next flush takes a fresh connection.

Sequencing (a writer given a `Sequencer`, as the storage node's): rows are submitted without a
seq, and the sequencer stamps each batch just before its SQL is built (one batch at a time), so
a conversation's seqs follow submission order. Then the writer guarantees that a conversation's
committed seqs stay contiguous from 1, whatever fails:
- rows are written with a plain INSERT, so a flush commits all of its rows at their stamped
  seqs or none of them: a key conflict (a racing former owner of a conversation, a duplicate
  the sequencer could not see) fails the flush like a lost connection does;
- a flush that fails, or cannot be built, rolls its lane back: every batch already stamped
  behind it fails too (an epoch count tells them apart), and before the next batch is stamped —
  once nothing stamped earlier can still commit — the sequencer forgets the conversations of
  all those batches and reloads them from the database;
- `resequence()` (a ring change) rolls back every conversation of every lane the same way.
Committed seqs are contiguous because a row at seq s only commits when its flush does, and its
flush only commits when the flush that holds s - 1 (if it is another one) committed before it
or the sequencer loaded s - 1 from the database.
Connections: one pooled connection per lane, held by its committer thread, which closes it.
This module is the writer's front (submit, close, stats); the lanes do the writing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import fields
from types import TracebackType

from schema.contracts.message import MAX_BODY_CHARS, MAX_CLIENT_MSG_ID_CHARS
from shard_store.backend import (
    WriterClosed,
)
from shard_store.schema import MAX_MENTIONS_CHARS, MessageRow
from shard_store.settings import StoreSettings
from shard_store.shards import ShardMap
from shard_store.store import Store
from shard_store.writer_lane import IDLE_WAKE_S, Item, Lane, Sequencer, WriterStats

CLOSE_TIMEOUT_S = 4.0
"""Default deadline of close(): a node stops within 5 s of SIGTERM."""


def _check(row: MessageRow) -> None:
    """Reject a row that could never be stored, before it can poison a whole flush."""
    if type(row) is not MessageRow:
        raise TypeError(f"submit takes a MessageRow, got {type(row).__name__}")
    conv_id, seq, msg_id, sender, cmid, ts, body, kind, ref_seq, mentions = row
    if not (
        type(conv_id)
        is type(seq)
        is type(msg_id)
        is type(sender)
        is type(ts)
        is type(kind)
        is type(ref_seq)
        is int
    ):
        raise TypeError(f"ids, seq, ts, kind and ref_seq must be int: {row[:4]} {ts!r}")
    if type(mentions) is not str or len(mentions) > MAX_MENTIONS_CHARS:
        raise ValueError(f"mentions must be a str of at most {MAX_MENTIONS_CHARS} chars")
    if type(cmid) is not str or not 0 < len(cmid) <= MAX_CLIENT_MSG_ID_CHARS:
        raise ValueError(f"client_msg_id must be 1-{MAX_CLIENT_MSG_ID_CHARS} chars: {cmid!r}")
    if type(body) is not str or len(body) > MAX_BODY_CHARS:
        raise ValueError(f"body must be a str of at most {MAX_BODY_CHARS} chars")
    if not (body.isascii() and cmid.isascii()):
        try:
            body.encode()
            cmid.encode()
        except UnicodeEncodeError:
            raise ValueError("body and client_msg_id must be valid Unicode text") from None


class BatchWriter:
    """Group-commit writer of the message table. Thread-safe; close() flushes what is pending."""

    def __init__(
        self,
        store: Store,
        *,
        max_rows: int = 512,
        max_ms: float = 5.0,
        linger_ms: float = 1.0,
        sequencer: Sequencer | None = None,
        on_commit: Callable[[float], None] | None = None,
    ) -> None:
        """`linger_ms`: how long an idle committer under a steady load lets rows gather (see
        `writer_lane.Lane`; 0: never). `on_commit(seconds)`, if given, hears how long each
        committed flush's transaction took, in the committer thread (for a latency histogram)."""
        if max_rows < 1 or max_ms < 0 or linger_ms < 0:
            raise ValueError(
                f"max_rows must be >= 1, max_ms and linger_ms >= 0: {max_rows}, {max_ms}, "
                f"{linger_ms}"
            )
        self._map: ShardMap = store.shard_map
        self._lanes = [
            Lane(db, max_rows, max_ms / 1000, linger_ms / 1000, sequencer, on_commit)
            for db in store.databases
        ]
        self._closed = False

    @classmethod
    def from_settings(
        cls,
        store: Store,
        settings: StoreSettings,
        sequencer: Sequencer | None = None,
        on_commit: Callable[[float], None] | None = None,
    ) -> BatchWriter:
        """A writer with SOIM_BATCH_ROWS, SOIM_BATCH_MS and SOIM_BATCH_LINGER_MS."""
        return cls(
            store,
            max_rows=settings.batch_rows,
            max_ms=settings.batch_ms,
            linger_ms=settings.batch_linger_ms,
            sequencer=sequencer,
            on_commit=on_commit,
        )

    def submit(self, row: MessageRow) -> Future[MessageRow]:
        """Queue `row`; the future resolves to the stored row after COMMIT (see module doc)."""
        return self.submit_many((row,))[0]

    def submit_many(self, rows: Sequence[MessageRow]) -> list[Future[MessageRow]]:
        """Queue `rows` at once (one lock per lane: what a storage node does per frame).

        Rows of one lane are taken together, so they share a flush when they fit in max_rows.
        Raises before queuing anything if a row is invalid.
        """
        for row in rows:
            _check(row)
        if self._closed:
            raise WriterClosed("the batch writer is closed")
        per_lane: list[list[Item]] = [[] for _ in self._lanes]
        futures: list[Future[MessageRow]] = []
        for row in rows:
            shard = self._map.shard_of(row.conv_id)
            fut: Future[MessageRow] = Future()
            per_lane[shard.db].append((row, shard.table_no, fut))
            futures.append(fut)
        for lane, items in zip(self._lanes, per_lane, strict=True):
            if items:
                lane.put(items)
        return futures

    @property
    def backlog(self) -> int:
        """Rows submitted but not yet taken into a flush (for flow control and metrics)."""
        return sum(lane.backlog for lane in self._lanes)

    @property
    def in_flight(self) -> int:
        """Flushes executing right now (at most one per database)."""
        return sum(lane.busy for lane in self._lanes)

    def stats(self) -> WriterStats:
        """Counters summed over all lanes."""
        total = WriterStats()
        for lane in self._lanes:
            for f in fields(WriterStats):
                setattr(total, f.name, getattr(total, f.name) + getattr(lane.stats, f.name))
        return total

    def resequence(self) -> None:
        """Sequencing writers: every conversation starts again from the database (a ring change);
        rows stamped before and not yet committing fail with FlushFailed (retry them)."""
        for lane in self._lanes:
            lane.roll_back(None)

    def abort_flush(self) -> bool:
        """Abort every flush in flight (MySQL: KILL its connection); their futures fail."""
        return any([lane.abort() for lane in self._lanes])

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop intake, flush everything pending, stop the threads.

        Past the deadline, flushes in flight are aborted and rows not yet written fail with
        WriterClosed, so a stopping node never hangs on a dead database.
        """
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        for lane in self._lanes:
            lane.begin_close()
        for lane in self._lanes:
            lane.join(deadline)
        stuck = [lane for lane in self._lanes if lane.alive]
        for lane in stuck:
            lane.abandon()
        for lane in stuck:
            lane.join(time.monotonic() + IDLE_WAKE_S * 4)

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
