"""A lane of the batch writer: the two threads that write one database's message rows.

Role: a batch is taken from the pending rows, stamped with seqs through a `Sequencer` when
there is one, and turned into one multi-row INSERT per shard table; the committer thread runs
each flush in one transaction, classifies ignored rows (duplicate or seq clash) and settles the
futures; a failed flush fails every row of it, and with a sequencer every batch stamped behind
it too, and rolls the affected conversations back. See `shard_store.batch_writer` for the
outcomes of a row.
Who builds: an idle committer takes and builds the next batch itself, so a lone row costs one
thread hand-off in and one out (under a steady load it first lets rows gather for `linger_s`); the
builder thread builds only while a commit runs, so the next flush is ready when it ends. It is
called in only when rows were already waiting as a commit began (the committer could not take
them all) or `max_rows` of them piled up during one: rows that trickle in during a commit are
taken by the committer itself when it ends, with no thread woken for them (a moderate load used
to wake the builder at the first row of every commit, mostly to find the commit over and nothing
to do). One batch is built at a time (`_building`), and batches are committed in the order they
were taken, so stamping needs no lock of its own.
Connections: one pooled connection of its database, held by the committer thread, which
closes it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol

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
    MESSAGE,
    MESSAGE_KINDS,
    MessageRow,
)

IDLE_WAKE_S = 0.5
"""Idle threads re-check their state at least this often."""
LINGER_RECENT_S = 0.004
"""An idle committer whose last take was less than this long ago lets rows gather for the
lane's `linger_s` (SOIM_BATCH_LINGER_MS, default 1 ms) before it takes them: under a steady
moderate load (hundreds to a few thousand sends a second, one StoreBatch of a row or two per
gateway at a time) this halves the flushes, whose fixed cost (~0.7 ms of the storage node's CPU
each: the StoreBatch, the committer's hand-offs, the transaction, the loop's wake-up, a Deliver
per router) is most of a message's; a lone send after a pause is taken at once."""

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

    Both methods run in one thread of `db`'s lane at a time (its builder's or its committer's),
    so a sequencer needs no lock for the conversations of one database.
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


class Lane:
    """The builder and committer threads of one database."""

    def __init__(
        self,
        db: Database,
        max_rows: int,
        max_s: float,
        linger_s: float,
        sequencer: Sequencer | None,
        on_commit: Callable[[float], None] | None = None,
    ) -> None:
        self.db = db
        self._on_commit = on_commit
        self.stats = WriterStats()
        self._seq = sequencer
        self._epoch = 0
        """Sequencing: bumped by every rollback; a batch stamped in an older epoch never commits."""
        self._forget: set[int] | None = set()
        """Sequencing: conversations to forget before the next stamping (None: all)."""
        self._max_rows = max_rows
        self._max_s = max_s
        self._linger_s = linger_s
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        self._builder_idle = threading.Condition(lock)
        """Where the builder waits while there is nothing for it to take: woken only when a
        commit begins with rows pending or `max_rows` pile up during one, not by every change
        the committer is told of nor by the first row behind a commit."""
        self._pending: list[Item] = []
        self._first_at = 0.0
        self._taken_at = 0.0
        self._sealed: _Flush | None = None
        self._busy = False
        self._building = False
        self._closing = False
        self._abandoned = False
        self._conn: Conn | None = None
        self._threads = [
            threading.Thread(
                target=self._build_loop, name=f"soim-writer-build-{db.index}", daemon=True
            ),
            threading.Thread(
                target=self._commit_loop, name=f"soim-writer-commit-{db.index}", daemon=True
            ),
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
                if not self._busy:
                    self._cond.notify_all()  # an idle committer takes them
            if before < self._max_rows <= len(self._pending):
                self._cond.notify_all()
                if self._busy:
                    self._builder_idle.notify()  # seal them while the commit runs

    def begin_close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            self._builder_idle.notify()

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
            self._builder_idle.notify()
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

    # -- building (the builder thread while a commit runs, else the committer) --

    def _build_loop(self) -> None:
        while True:
            taken = self._take_while_busy()
            if taken is None:
                return
            flush = self._prepare(*taken)
            with self._cond:
                while flush is not None and self._sealed is not None and not self._abandoned:
                    self._cond.wait(IDLE_WAKE_S)  # the batch before it is still to be taken
                self._building = False
                self._cond.notify_all()
                if flush is None:
                    continue
                abandoned = self._abandoned
                if not abandoned and (self._seq is None or flush.epoch == self._epoch):
                    self._sealed = flush
                    continue
                if not abandoned:  # before an idle committer can stamp these conversations
                    self._stale(flush.items, "an earlier flush failed; retry")
                    continue
            _fail(flush.items, WriterClosed, "writer shut down before this row was written")

    def _take_while_busy(self) -> tuple[list[Item], int, set[int] | None] | None:
        """Builder: the next batch, taken while a commit runs, at max_rows or max_ms after its
        first row (None: stop). An idle committer takes rows itself, and so does it when
        conversations must be forgotten first (that waits until nothing stamped is in flight)."""
        with self._cond:
            while not (self._closing or self._abandoned):
                if (
                    self._busy
                    and self._pending
                    and not self._building
                    and (self._seq is None or self._forget == set())
                ):
                    left = self._first_at + self._max_s - time.monotonic()
                    if left <= 0 or len(self._pending) >= self._max_rows:
                        return self._take()
                    self._cond.wait(left)
                else:
                    self._builder_idle.wait(IDLE_WAKE_S)
            return None

    def _take(self) -> tuple[list[Item], int, set[int] | None]:
        """With the lock held: the next batch, the epoch it is stamped in and the conversations
        to forget first; the taker builds it (`_prepare`) and then clears `_building`."""
        batch = self._pending[: self._max_rows]
        del self._pending[: self._max_rows]
        self._taken_at = time.monotonic()
        if self._pending:
            self._first_at = self._taken_at
        forget, self._forget = self._forget, set()
        self._building = True
        return batch, self._epoch, forget

    def _linger(self) -> float:
        """With the lock held, pending rows and an idle committer: how long it should still let
        rows gather (see LINGER_RECENT_S); 0: take them now."""
        if not self._linger_s or self._closing or len(self._pending) >= self._max_rows:
            return 0.0
        now = time.monotonic()
        if now - self._taken_at >= LINGER_RECENT_S:
            return 0.0
        return self._first_at + self._linger_s - now

    def _prepare(self, batch: list[Item], epoch: int, forget: set[int] | None) -> _Flush | None:
        """Stamp and build a taken batch; None when nothing is left to write (a failure has
        failed its rows, or the sequencer settled them all)."""
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
            return None
        return flush if items else None

    def _build(self, batch: list[Item], epoch: int) -> _Flush:
        by_table: defaultdict[int, list[Item]] = defaultdict(list)
        for item in batch:
            by_table[item[1]].append(item)
        groups = []
        for table_no in sorted(by_table):  # one lock order for every writer: no deadlocks
            items = by_table[table_no]
            table = f"{MESSAGE.name}_{table_no}"
            stmts = self.db.insert_statements(
                table,
                _COLUMNS,
                MESSAGE_KINDS,
                [item[0] for item in items],
                ignore=self._seq is None,
            )
            groups.append((table, items, stmts))
        return _Flush(batch, groups, epoch)

    # -- committer thread --

    def _commit_loop(self) -> None:
        try:
            while True:
                flush: _Flush | None = None
                with self._cond:
                    taken = None
                    while self._sealed is None:
                        if self._abandoned:
                            return
                        if self._pending and not self._building:
                            linger = self._linger()
                            if linger > 0:
                                self._cond.wait(linger)
                                continue
                            taken = self._take()  # idle: build it here, no hand-off
                            break
                        if self._closing and not self._building:
                            return  # everything pending is written
                        self._cond.wait(IDLE_WAKE_S)
                    else:
                        flush, self._sealed = self._sealed, None
                    self._cond.notify_all()
                if taken is not None:
                    flush = self._prepare(*taken)
                with self._cond:
                    if taken is not None:
                        self._building = False
                    abandoned = self._abandoned
                    stale = (
                        flush is not None and self._seq is not None and flush.epoch != self._epoch
                    )
                    self._busy = flush is not None and not (stale or abandoned)
                    self._cond.notify_all()
                    if self._busy and self._pending:
                        self._builder_idle.notify()
                if flush is None:
                    continue
                if abandoned:
                    _fail(flush.items, WriterClosed, "writer shut down before this row was written")
                    continue
                if stale:
                    self._stale(flush.items, "an earlier flush failed; retry")
                    continue
                self._commit(flush)  # clears _busy once the flush is committed or failed
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _commit(self, flush: _Flush) -> None:
        started = time.perf_counter()
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
            with self._cond:
                self._busy = False
                self._cond.notify_all()
            _fail(flush.items, FlushFailed, f"flush of {len(flush.items)} rows failed: {err}")
            return
        with self._cond:  # committed: nothing left that an abort could interrupt
            self._busy = False
            self._cond.notify_all()
        if self._on_commit is not None:
            self._on_commit(time.perf_counter() - started)
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

    def _classify(
        self,
        conn: Conn,
        table: str,
        items: list[Item],
        special: dict[Future[MessageRow], MessageRow | SeqClash],
    ) -> None:
        """Read back by the unique key to tell duplicates from seq clashes."""
        keys = [(row.conv_id, row.sender, row.client_msg_id) for row, _, _ in items]
        stored: dict[tuple[int, int, str], MessageRow] = {}
        for sql, params in self.db.select_in_statements(table, _COLUMNS, _KEY, "iis", keys):
            for rec in conn.query(sql, params):
                have = MessageRow(*rec)
                stored[(have.conv_id, have.sender, have.client_msg_id)] = have
        for row, _, fut in items:
            found = stored.get((row.conv_id, row.sender, row.client_msg_id))
            if found is None:
                special[fut] = SeqClash(row.conv_id, row.seq)
                self.stats.clashes += 1
            elif found != row:
                special[fut] = found
                self.stats.duplicates += 1


def _fail(items: list[Item], kind: type[StoreError], message: str) -> None:
    for _, _, fut in items:
        with suppress(InvalidStateError):  # cancelled by the caller: nothing to tell
            fut.set_exception(kind(message))
