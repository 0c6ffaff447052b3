"""Batch writer on both backends: dedup, seq clashes, failed flushes, shutdown, batching rules."""

from __future__ import annotations

import random
import threading
from collections.abc import Collection
from concurrent.futures import Future, wait

import pytest

from shard_store import (
    BatchWriter,
    Database,
    FlushFailed,
    MessageRow,
    SeqClash,
    SettingError,
    Store,
    StoreSettings,
    WriterClosed,
)
from shard_store.batch_writer import Item
from tests.shard_store.conftest import Faults, msg, stored_messages
from tests.support import wait_until


def dedup_workload(
    n: int, dup_share: float, convs: int, seed: int
) -> tuple[list[MessageRow], dict[int, MessageRow]]:
    """`n` rows in submission order; dup_share of them repeat an earlier row's unique key with a
    new seq and msg_id (a retry that reached the writer twice). Returns rows and, for each
    duplicate's index, the original row it must resolve to."""
    rnd = random.Random(seed)
    seqs = [0] * (convs + 1)
    last: dict[int, MessageRow] = {}
    rows: list[MessageRow] = []
    originals: dict[int, MessageRow] = {}
    for i in range(n):
        conv = rnd.randint(1, convs)
        seqs[conv] += 1
        if conv in last and rnd.random() < dup_share:
            originals[i] = last[conv]
            rows.append(last[conv]._replace(seq=seqs[conv], msg_id=10_000_000 + i))
        else:
            last[conv] = msg(conv, seqs[conv], f"u{i}", msg_id=i + 1, body=f"body {i} ' \\ é")
            rows.append(last[conv])
    return rows, originals


@pytest.mark.timeout(90)
def test_100k_rows_with_duplicates_store_each_once(store: Store) -> None:
    rows, originals = dedup_workload(100_000, 0.01, 500, seed=3)
    assert 900 <= len(originals) <= 1100
    writer = BatchWriter(store, max_rows=512, max_ms=5)
    futures: list[Future[MessageRow] | None] = [None] * len(rows)

    def submit(part: int) -> None:  # one conversation is always submitted by one thread
        for i, row in enumerate(rows):
            if row.conv_id % 4 == part:
                futures[i] = writer.submit(row)

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    done, not_done = wait([f for f in futures if f is not None], timeout=60)
    writer.close()
    assert not not_done and len(done) == len(rows)
    for i, (row, fut) in enumerate(zip(rows, futures, strict=True)):
        assert fut is not None
        assert fut.result() == originals.get(i, row)
    unique = [r for i, r in enumerate(rows) if i not in originals]
    assert stored_messages(store) == set(unique)
    stats = writer.stats()
    assert stats.duplicates == len(originals) and stats.failed_flushes == stats.clashes == 0


def test_seq_clash_fails_that_row_only(store: Store) -> None:
    with BatchWriter(store, max_rows=64, max_ms=5) as writer:
        a = msg(11, 1, "a")
        assert writer.submit(a).result(10) == a
        clash = writer.submit(msg(11, 1, "b", msg_id=99))
        with pytest.raises(SeqClash) as err:
            clash.result(10)
        assert (err.value.conv_id, err.value.seq) == (11, 1)
        # In one flush: a clash, a duplicate and plain rows side by side.
        c, e, f = msg(11, 2, "c"), msg(11, 3, "e"), msg(11, 4, "f")
        futs = writer.submit_many(
            [c, msg(11, 2, "d", msg_id=98), e, f, f._replace(seq=5, msg_id=97)]
        )
        assert futs[0].result(10) == c
        with pytest.raises(SeqClash):
            futs[1].result(10)
        assert [x.result(10) for x in futs[2:]] == [e, f, f]
    assert stored_messages(store) == {a, c, e, f}


@pytest.mark.timeout(60)
def test_killed_flush_fails_all_its_rows_and_next_flush_succeeds(
    store: Store, faults: Faults
) -> None:
    commits: list[float] = []
    writer = BatchWriter(store, max_rows=64, max_ms=5, on_commit=commits.append)
    try:
        early, victim = msg(1, 1), msg(3, 1)  # tables 1 and 3: killed between the two INSERTs
        with faults.stall(victim):
            futures = writer.submit_many([early, victim])
            faults.wait_stalled(writer, victim)
            faults.kill(writer, futures)
        for fut in futures:
            with pytest.raises(FlushFailed):
                fut.result(0)
        assert stored_messages(store) == set()  # the first INSERT rolled back: no half-ack
        later = msg(2, 1)
        assert writer.submit(later).result(10) == later
        assert [f.result(10) for f in writer.submit_many([early, victim])] == [early, victim]
        assert stored_messages(store) == {early, victim, later}
        assert writer.stats().failed_flushes == 1
        assert len(commits) == writer.stats().flushes >= 2  # timed: committed flushes only
        assert all(0 < s < 10 for s in commits)
    finally:
        writer.close()


@pytest.mark.timeout(60)
def test_shutdown_mid_stream_loses_nothing_acknowledged(store: Store) -> None:
    writer = BatchWriter(store, max_rows=128, max_ms=2)
    futures: list[Future[MessageRow]] = []
    refused = threading.Event()

    def produce() -> None:
        seq = 0
        while True:
            seq += 1
            try:
                futures.extend(writer.submit_many([msg(c, seq) for c in range(1, 33)]))
            except WriterClosed:
                refused.set()
                return

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until(lambda: len(futures) > 5_000, what="a stream of rows")
    writer.close(timeout_s=20)
    producer.join(timeout=10)
    assert refused.is_set()
    assert all(f.done() for f in futures)
    acked = {f.result() for f in futures}  # close flushed everything it had accepted
    assert len(acked) == len(futures)
    assert stored_messages(store) == acked


def test_idle_writer_flushes_at_once(store: Store) -> None:
    with BatchWriter(store, max_rows=1000, max_ms=60_000) as writer:
        row = msg(5, 1)
        assert writer.submit(row).result(timeout=10) == row  # never waits out max_ms


def test_the_linger_is_a_setting(store: Store) -> None:
    """SOIM_BATCH_LINGER_MS (default 1) reaches the writer; 0 turns the linger off, and a
    writer without it still writes each lone row at once."""
    assert StoreSettings.from_env({}).batch_linger_ms == 1
    off = StoreSettings.from_env({"SOIM_BATCH_LINGER_MS": "0"})
    assert off.batch_linger_ms == 0
    for bad in ("101", "-1", "1.5"):
        with pytest.raises(SettingError) as err:
            StoreSettings.from_env({"SOIM_BATCH_LINGER_MS": bad})
        assert err.value.var == "SOIM_BATCH_LINGER_MS"
    with BatchWriter.from_settings(store, off) as writer:
        for i in range(1, 6):
            row = msg(7, i)
            assert writer.submit(row).result(timeout=10) == row
        assert writer.stats().flushes == 5


@pytest.mark.timeout(60)
def test_rows_batch_while_a_commit_runs_and_seal_at_max_rows(store: Store, faults: Faults) -> None:
    writer = BatchWriter(store, max_rows=10, max_ms=60_000)
    try:
        first = msg(3, 1)
        with faults.stall(first):
            head = writer.submit(first)
            faults.wait_stalled(writer, first)
            rest = writer.submit_many([msg(c, 1) for c in range(100, 130)])
            # One sealed batch waits for the committer, the builder holds the next one built,
            # and the last 10 rows stay pending until the stalled commit ends.
            wait_until(lambda: writer.backlog == 10, what="20 rows taken into sealed batches")
            assert not head.done() and not any(f.done() for f in rest)
            if store.kind == "sqlite":
                faults.kill(writer, [head])  # a slow trigger cannot be waited out
        wait([head, *rest], timeout=30)
        assert all(f.result() for f in rest)
        stats = writer.stats()
        assert stats.flushes + stats.failed_flushes == 4  # the stalled one, then 3 x 10 rows
        assert stats.rows == 30 + (store.kind == "mysql")
    finally:
        writer.close()


@pytest.mark.parametrize(
    "bad, error",
    [
        (msg(1, 1)._replace(body="x" * 4001), ValueError),
        (msg(1, 1)._replace(client_msg_id=""), ValueError),
        (msg(1, 1)._replace(client_msg_id="x" * 65), ValueError),
        (msg(1, 1)._replace(body="\ud800"), ValueError),
        (msg(1, 1)._replace(seq="1"), TypeError),
        ((1, 1, 1, 1, "a", 1, "b"), TypeError),
    ],
)
def test_invalid_rows_are_refused_before_queuing(
    store: Store, bad: MessageRow, error: type[Exception]
) -> None:
    with BatchWriter(store) as writer:
        with pytest.raises(error):
            writer.submit_many([msg(1, 1), bad])
        assert writer.backlog == 0
    assert stored_messages(store) == set()


def test_body_of_4000_chars_round_trips(store: Store) -> None:
    row = msg(9, 1, body="é" * 2000 + "😀" * 2000)
    with BatchWriter(store) as writer:
        assert writer.submit(row).result(10) == row
    assert stored_messages(store) == {row}


class CountingSequencer:
    """The least a Sequencer does: next seq per conversation, loaded as MAX(seq) on first use."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}
        self.forgotten: list[set[int] | None] = []

    def assign(self, db: Database, items: list[Item]) -> list[Item]:
        out = []
        for row, table_no, fut in items:
            if row.conv_id not in self.next:
                with db.connection() as conn:
                    last = conn.query(
                        f"SELECT MAX(seq) FROM `message_{table_no}` WHERE conv_id = %s",
                        (row.conv_id,),
                    )[0][0]
                self.next[row.conv_id] = int(last or 0) + 1
            out.append((row._replace(seq=self.next[row.conv_id]), table_no, fut))
            self.next[row.conv_id] += 1
        return out

    def forget(self, db: Database, conv_ids: Collection[int] | None) -> None:
        self.forgotten.append(None if conv_ids is None else set(conv_ids))
        for conv in list(self.next) if conv_ids is None else conv_ids:
            self.next.pop(conv, None)


def unsequenced(conv: int, cmid: str) -> MessageRow:
    return msg(conv, 0, cmid, msg_id=hash(cmid) & 0xFFFFFF)


class ThreadNoting(CountingSequencer):
    """Notes which writer thread stamped each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def assign(self, db: Database, items: list[Item]) -> list[Item]:
        self.threads.append(threading.current_thread().name)
        return super().assign(db, items)


@pytest.mark.timeout(60)
def test_an_idle_committer_builds_the_flush_itself_the_builder_while_it_commits(
    store: Store, faults: Faults
) -> None:
    """A lone row crosses one thread hand-off, not two; rows behind a running commit are
    stamped and built by the builder meanwhile, in order."""
    seq = ThreadNoting()
    writer = BatchWriter(store, max_rows=10, max_ms=60_000, sequencer=seq)
    try:
        assert writer.submit(unsequenced(1, "a")).result(10).seq == 1
        assert seq.threads == ["soim-writer-commit-0"]
        with faults.stall(msg(1, 2)):
            head = writer.submit(unsequenced(1, "h"))
            faults.wait_stalled(writer, msg(1, 2))
            behind = writer.submit_many([unsequenced(1, f"b{i}") for i in range(10)])
            wait_until(
                lambda: seq.threads[-1] == "soim-writer-build-0",
                what="the builder to stamp the rows behind",
            )  # taken, then stamped
            assert writer.backlog == 0 and not head.done()
            if store.kind == "sqlite":
                faults.kill(writer, [head])  # a slow trigger cannot be waited out
        wait([head, *behind], timeout=30)
        if head.exception() is None:
            assert [f.result().seq for f in [head, *behind]] == list(range(2, 13))
        else:  # killed: the rows stamped behind it fail too, and start again from the database
            assert all(isinstance(f.exception(), FlushFailed) for f in behind)
            assert writer.submit(unsequenced(1, "c")).result(10).seq == 2
    finally:
        writer.close()


@pytest.mark.timeout(60)
def test_sequencing_writer_fails_what_was_stamped_behind_a_failed_flush(
    store: Store, faults: Faults
) -> None:
    seq = CountingSequencer()
    writer = BatchWriter(store, max_rows=10, max_ms=60_000, sequencer=seq)
    try:
        with faults.stall(msg(1, 1)):
            head = writer.submit(unsequenced(1, "h"))
            faults.wait_stalled(writer, msg(1, 1))
            behind = writer.submit_many([unsequenced(1 + 8 * (i % 2), f"b{i}") for i in range(20)])
            wait_until(lambda: writer.backlog == 0, what="a batch sealed, the next one stamped")
            faults.kill(writer, [head, *behind])
        for fut in [head, *behind]:
            with pytest.raises(FlushFailed):
                fut.result(0)
        assert stored_messages(store) == set()
        again = writer.submit_many([unsequenced(1, "h"), unsequenced(9, "n")])
        assert [f.result(10).seq for f in again] == [1, 1]  # started again from the database
        assert seq.forgotten and set().union(*(s or set() for s in seq.forgotten)) >= {1, 9}
    finally:
        writer.close()


def test_sequencing_writer_fails_a_flush_on_a_key_conflict_as_a_whole(store: Store) -> None:
    """A row of another owner at a stamped seq: nothing of the flush is written (no gap)."""
    seq = CountingSequencer()
    with BatchWriter(store, max_rows=64, max_ms=5, sequencer=seq) as writer:
        assert writer.submit(unsequenced(5, "a")).result(10).seq == 1
        store.execute(
            "message",
            5,
            "INSERT INTO {t} (conv_id, seq, msg_id, sender, client_msg_id, "
            "ts, body) VALUES (5, 2, 99, 8, 'theirs', 0, 'x')",
        )
        futs = writer.submit_many([unsequenced(5, "b"), unsequenced(5, "c")])
        for fut in futs:
            with pytest.raises(FlushFailed):
                fut.result(10)
        assert seq.forgotten == []  # forgotten just before the next batch is stamped
        assert [
            f.result(10).seq for f in writer.submit_many([unsequenced(5, "b"), unsequenced(5, "c")])
        ] == [3, 4]
        assert seq.forgotten == [{5}]
    assert sorted(r.seq for r in stored_messages(store)) == [1, 2, 3, 4]
