"""Batch writer: group commit of message rows. `submit(row)` returns a Future that resolves only
after the COMMIT that made the row durable.

Role: the one place where messages become durable. Each database of SOIM_DB gets a lane of two
threads fed by a pending list: a builder that turns pending rows into one multi-row INSERT IGNORE
per shard table, and a committer that runs a whole flush in one transaction and then resolves
its futures. The builder never lingers while the committer is free (an idle writer flushes at
once); while a commit is in flight rows accumulate, and the next batch is sealed at `max_rows`
rows or `max_ms` after its first row, whichever comes first, its SQL built while the commit
still runs. Rows of one conversation share a lane, so they commit in submission order.

Outcome of a row:
- inserted: the future resolves to the row itself;
- ignored, and its unique key (conv_id, sender, client_msg_id) holds another row: a duplicate;
  the future resolves to the row already stored (its seq and msg_id differ from the submitted);
- ignored, but nothing is stored under its unique key: its (conv_id, seq) belongs to a different
  message; the future fails with SeqClash and the row is never acknowledged;
- the flush failed (lost or killed connection, lock timeout, ...): every future of the flush
  fails with FlushFailed, the transaction rolls back and the next flush takes a fresh connection.

Sequencing (a writer given a `Sequencer`, as the storage node's): rows are submitted without a
seq, and the sequencer stamps each batch in the builder thread just before its SQL is built, so
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
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Protocol

from fabric.config import Config
from shard_store.backend import (
    Conn,
    Database,
    FlushFailed,
    SeqClash,
    Statement,
    StoreError,
    WriterClosed,
)
from shard_store.schema import (
    MAX_BODY_CHARS,
    MAX_CLIENT_MSG_ID_CHARS,
    MESSAGE,
    MESSAGE_KINDS,
    MessageRow,
)
from shard_store.shards import ShardMap
from shard_store.store import Store

IDLE_WAKE_S = 0.5
"""Idle threads re-check their state at least this often."""
CLOSE_TIMEOUT_S = 4.0
"""Default deadline of close(): a node stops within 5 s of SIGTERM."""

_COLUMNS = MessageRow._fields
_KEY = ("conv_id", "sender", "client_msg_id")
Item = tuple[MessageRow, int, "Future[MessageRow]"]
"""A pending row, the number of its shard table in its database, and its future."""


@dataclass
class WriterStats:
    """Counters of one writer (summed over its lanes)."""

    flushes: int = 0
    rows: int = 0
    duplicates: int = 0
    clashes: int = 0
    failed_flushes: int = 0
    failed_rows: int = 0


class Sequencer(Protocol):
    """Stamps seqs at build time for a sequencing writer (see the module doc).

    Both methods run in the builder thread of `db`'s lane, so a sequencer needs no lock for the
    conversations of one database.
    """

    def assign(self, db: Database, items: list[Item]) -> list[Item]:
        """The items to write, in order, with their rows' seqs stamped.

        Items left out must have their futures settled by the sequencer (e.g. a retried send
        resolved to the stored row). Raising fails the whole batch and rolls its lane back.
        """
        ...

    def forget(self, db: Database, conv_ids: Collection[int] | None) -> None:
        """The seqs stamped for these conversations of `db` (None: all of them) may not all be
        written and nothing stamped for them can still commit: start them again from the
        database."""
        ...


@dataclass
class _Flush:
    items: list[Item]
    groups: list[tuple[str, list[Item], list[Statement]]]
    epoch: int = 0


def _check(row: MessageRow) -> None:
    """Reject a row that could never be stored, before it can poison a whole flush."""
    if type(row) is not MessageRow:
        raise TypeError(f"submit takes a MessageRow, got {type(row).__name__}")
    conv_id, seq, msg_id, sender, cmid, ts, body = row
    if not (type(conv_id) is type(seq) is type(msg_id) is type(sender) is type(ts) is int):
        raise TypeError(f"ids, seq and ts must be int: {row[:4]} {ts!r}")
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

    def __init__(self, store: Store, *, max_rows: int = 512, max_ms: float = 5.0,
                 sequencer: Sequencer | None = None) -> None:
        if max_rows < 1 or max_ms < 0:
            raise ValueError(f"max_rows must be >= 1 and max_ms >= 0: {max_rows}, {max_ms}")
        self._map: ShardMap = store.shard_map
        self._lanes = [_Lane(db, max_rows, max_ms / 1000, sequencer) for db in store.databases]
        self._closed = False

    @classmethod
    def from_config(cls, store: Store, config: Config,
                    sequencer: Sequencer | None = None) -> BatchWriter:
        """A writer with SOIM_BATCH_ROWS and SOIM_BATCH_MS."""
        return cls(store, max_rows=config.batch_rows, max_ms=config.batch_ms,
                   sequencer=sequencer)

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

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _Lane:
    """The builder and committer threads of one database."""

    def __init__(self, db: Database, max_rows: int, max_s: float,
                 sequencer: Sequencer | None) -> None:
        self.db = db
        self.stats = WriterStats()
        self._seq = sequencer
        self._epoch = 0
        """Sequencing: bumped by every rollback; a batch stamped in an older epoch never commits."""
        self._forget: set[int] | None = set()
        """Sequencing: conversations to forget before the next stamping (None: all)."""
        self._max_rows = max_rows
        self._max_s = max_s
        self._cond = threading.Condition()
        self._pending: list[Item] = []
        self._first_at = 0.0
        self._sealed: _Flush | None = None
        self._busy = False
        self._closing = False
        self._abandoned = False
        self._built_all = False
        self._conn: Conn | None = None
        self._threads = [
            threading.Thread(target=self._build_loop, name=f"soim-writer-build-{db.index}",
                             daemon=True),
            threading.Thread(target=self._commit_loop, name=f"soim-writer-commit-{db.index}",
                             daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    @property
    def busy(self) -> bool:
        return self._busy

    def put(self, items: list[Item]) -> None:
        with self._cond:
            if self._closing:
                raise WriterClosed("the batch writer is closed")
            before = len(self._pending)
            self._pending.extend(items)
            if before == 0:
                self._first_at = time.monotonic()
                self._cond.notify_all()
            elif before < self._max_rows <= len(self._pending):
                self._cond.notify_all()

    def begin_close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def join(self, deadline: float) -> None:
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def abandon(self) -> None:
        """Past the close deadline: fail what is not written yet and abort the flush."""
        with self._cond:
            self._abandoned = True
            dropped = self._pending + (self._sealed.items if self._sealed else [])
            self._pending, self._sealed = [], None
            self._cond.notify_all()
        _fail(dropped, WriterClosed, "writer shut down before this row was written")
        self.abort()

    def roll_back(self, conv_ids: Collection[int] | None) -> None:
        """Batches stamped until now fail; forget `conv_ids` (None: all) before stamping again."""
        with self._cond:
            self._roll_back(conv_ids)

    def _roll_back(self, conv_ids: Collection[int] | None) -> None:
        """roll_back with the lock held."""
        self._epoch += 1
        if conv_ids is None or self._forget is None:
            self._forget = None
        else:
            self._forget.update(conv_ids)
        self._cond.notify_all()

    def _stale(self, items: list[Item], why: str) -> None:
        """A stamped batch that must not commit: fail it and roll its conversations back."""
        with self._cond:
            self._roll_back({row.conv_id for row, _, _ in items})
        self.stats.failed_flushes += 1
        self.stats.failed_rows += len(items)
        _fail(items, FlushFailed, why)

    def abort(self) -> bool:
        conn = self._conn if self._busy else None
        if conn is None:
            return False
        try:
            self.db.interrupt(conn)
        except StoreError:
            return False
        return True

    # -- builder thread --

    def _build_loop(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            batch, epoch, forget = taken
            items = batch
            try:
                if self._seq is not None:
                    if forget is None or forget:
                        self._seq.forget(self.db, forget)
                    items = self._seq.assign(self.db, batch)
                flush = self._build(items, epoch)
            except Exception as err:  # a read of the sequencer failed, or a row was unusable
                if self._seq is not None:
                    self._stale(batch, f"could not build the flush: {err}")
                else:
                    _fail(batch, FlushFailed, f"could not build the flush: {err}")
                continue
            if not items:
                continue  # the sequencer settled every row (retries of stored messages)
            with self._cond:
                while self._sealed is not None and not self._abandoned:
                    self._cond.wait(IDLE_WAKE_S)
                abandoned = self._abandoned
                if not abandoned and (self._seq is None or epoch == self._epoch):
                    self._sealed = flush
                    self._cond.notify_all()
                    continue
            if abandoned:
                _fail(items, WriterClosed, "writer shut down before this row was written")
            else:
                self._stale(items, "an earlier flush failed; retry")

    def _take(self) -> tuple[list[Item], int, set[int] | None] | None:
        """The next batch: at once if the committer is free, else at max_rows or max_ms.

        Sequencing: also the epoch it is stamped in and the conversations to forget first —
        handed over only once no flush stamped earlier is sealed or running.
        """
        with self._cond:
            while not self._pending:
                if self._closing:
                    self._built_all = True
                    self._cond.notify_all()
                    return None
                self._cond.wait(IDLE_WAKE_S)
            while ((self._busy or self._sealed is not None) and not self._closing
                   and len(self._pending) < self._max_rows):
                left = self._first_at + self._max_s - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._seq is not None and self._forget != set():
                while (self._busy or self._sealed is not None) and not self._abandoned:
                    self._cond.wait(IDLE_WAKE_S)
            batch = self._pending[:self._max_rows]
            del self._pending[:self._max_rows]
            if self._pending:
                self._first_at = time.monotonic()
            forget, self._forget = self._forget, set()
            return batch, self._epoch, forget

    def _build(self, batch: list[Item], epoch: int) -> _Flush:
        by_table: defaultdict[int, list[Item]] = defaultdict(list)
        for item in batch:
            by_table[item[1]].append(item)
        groups = []
        for table_no in sorted(by_table):  # one lock order for every writer: no deadlocks
            items = by_table[table_no]
            table = f"{MESSAGE.name}_{table_no}"
            stmts = self.db.insert_statements(table, _COLUMNS, MESSAGE_KINDS,
                                              [item[0] for item in items],
                                              ignore=self._seq is None)
            groups.append((table, items, stmts))
        return _Flush(batch, groups, epoch)

    # -- committer thread --

    def _commit_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._sealed is None:
                        if self._built_all or self._abandoned:
                            return
                        self._cond.wait(IDLE_WAKE_S)
                    flush, self._sealed = self._sealed, None
                    stale = self._seq is not None and flush.epoch != self._epoch
                    self._busy = not stale
                    self._cond.notify_all()
                if stale:
                    self._stale(flush.items, "an earlier flush failed; retry")
                    continue
                self._commit(flush)
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _commit(self, flush: _Flush) -> None:
        try:
            special = self._write(flush)
        except Exception as err:  # any failure fails the whole flush, never a half-ack
            if self._conn is not None:
                self._conn.broken = True
                self._conn.close()
                self._conn = None
            if self._seq is not None:
                self.roll_back({row.conv_id for row, _, _ in flush.items})
            self.stats.failed_flushes += 1
            self.stats.failed_rows += len(flush.items)
            _fail(flush.items, FlushFailed, f"flush of {len(flush.items)} rows failed: {err}")
            return
        self.stats.flushes += 1
        self.stats.rows += len(flush.items)
        for row, _, fut in flush.items:
            out = special.get(fut, row) if special else row
            try:
                if isinstance(out, SeqClash):
                    fut.set_exception(out)
                else:
                    fut.set_result(out)
            except InvalidStateError:  # the caller cancelled it; the row is written anyway
                pass

    def _write(self, flush: _Flush) -> dict[Future[MessageRow], MessageRow | SeqClash]:
        """Run the flush as one transaction; return the rows that were not simply inserted.

        Rows whose INSERT was ignored are read back after the COMMIT: message rows are never
        updated or deleted, so what is stored under their unique key then is final.
        """
        if self._conn is None:
            self._conn = self.db.connection(batch=True)
        conn = self._conn
        counts = iter(conn.write_batch([st for _, _, stmts in flush.groups for st in stmts]))
        special: dict[Future[MessageRow], MessageRow | SeqClash] = {}
        for table, items, stmts in flush.groups:
            inserted = sum(next(counts) for _ in stmts)
            if inserted != len(items):
                self._classify(conn, table, items, special)
        return special

    def _classify(self, conn: Conn, table: str, items: list[Item],
                  special: dict[Future[MessageRow], MessageRow | SeqClash]) -> None:
        """Read back by the unique key to tell duplicates from seq clashes."""
        keys = [(row.conv_id, row.sender, row.client_msg_id) for row, _, _ in items]
        stored: dict[tuple[int, int, str], MessageRow] = {}
        for sql, params in self.db.select_in_statements(table, _COLUMNS, _KEY, "iis", keys):
            for rec in conn.query(sql, params):
                have = MessageRow(*rec)
                stored[(have.conv_id, have.sender, have.client_msg_id)] = have
        for row, _, fut in items:
            have = stored.get((row.conv_id, row.sender, row.client_msg_id))
            if have is None:
                special[fut] = SeqClash(row.conv_id, row.seq)
                self.stats.clashes += 1
            elif have != row:
                special[fut] = have
                self.stats.duplicates += 1


def _fail(items: list[Item], kind: type[StoreError], message: str) -> None:
    for _, _, fut in items:
        with suppress(InvalidStateError):  # cancelled by the caller: nothing to tell
            fut.set_exception(kind(message))
