"""The storage node's sequencer inside the batch writer, on SQLite and MariaDB: seqs contiguous
from 1 per conversation and every ack a committed row — through killed flushes with batches
stamped behind them, ring changes, and a racing second owner of the same conversations; retried
sends are stored once and acked with the first ack's seq and msg_id, even after a restart."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterable
from concurrent.futures import wait

import pytest
from prometheus_client import REGISTRY

from nodes.storage.sequencer import Sequencer
from shard_store import BatchWriter, FlushFailed, MessageRow, Store
from tests.shard_store.conftest import Faults, stored_messages
from tests.support import wait_until

_ids = itertools.count(1)


def send(conv: int, cmid: str, sender: int = 7) -> MessageRow:
    """A row as the storage node submits it: no seq yet, a fresh msg_id."""
    return MessageRow(conv, 0, next(_ids), sender, cmid, int(time.time() * 1000), f"body {cmid}")


def sequencing_writer(store: Store, sequencer: Sequencer | None = None, **kw: float) -> BatchWriter:
    return BatchWriter(store, sequencer=sequencer or Sequencer(), **kw)  # type: ignore[arg-type]


def store_all(
    writer: BatchWriter, rows: Iterable[MessageRow], timeout: float = 60.0
) -> dict[tuple[int, int, str], MessageRow]:
    """Submit `rows` and resubmit each failed one (same key, new msg_id) as a client would,
    until every one is acked; returns the acks by key."""
    acked: dict[tuple[int, int, str], MessageRow] = {}
    todo = list(rows)
    deadline = time.monotonic() + timeout
    while todo:
        assert time.monotonic() < deadline, f"{len(todo)} rows never acked"
        futures = writer.submit_many(todo)
        wait(futures, timeout=max(deadline - time.monotonic(), 0))
        retry = []
        for row, fut in zip(todo, futures, strict=True):
            if fut.exception() is None:
                ack = fut.result()
                key = (row.conv_id, row.sender, row.client_msg_id)
                assert acked.setdefault(key, ack) == ack, "two different acks for one send"
            else:
                assert isinstance(fut.exception(), FlushFailed), fut.exception()
                retry.append(row._replace(msg_id=next(_ids)))
        todo = retry
    return acked


def check_store(store: Store, acked: dict[tuple[int, int, str], MessageRow]) -> None:
    """Every ack is the stored row; each conversation holds seqs 1..n, each key once."""
    rows = stored_messages(store)
    by_key = {(r.conv_id, r.sender, r.client_msg_id): r for r in rows}
    assert len(by_key) == len(rows), "a key is stored twice"
    for key, ack in acked.items():
        assert by_key.get(key) == ack, f"ack {ack} is not the stored row {by_key.get(key)}"
    seqs: dict[int, list[int]] = {}
    for r in rows:
        seqs.setdefault(r.conv_id, []).append(r.seq)
    for conv, have in seqs.items():
        assert sorted(have) == list(range(1, len(have) + 1)), f"conversation {conv}: gap"


@pytest.fixture
def store(db_url: str) -> Iterable[Store]:
    s = Store.open(db_url, 8)
    try:
        yield s
    finally:
        s.close()


@pytest.mark.timeout(60)
def test_retries_get_the_first_ack_in_flight_after_commit_and_after_a_restart(store: Store) -> None:
    with sequencing_writer(store, max_rows=64, max_ms=5) as writer:
        first = [send(11, f"m{i}") for i in range(5)]
        # in one batch: each send twice; the second copy follows the first
        futures = writer.submit_many([*first, *(r._replace(msg_id=next(_ids)) for r in first)])
        acks = [f.result(10) for f in futures]
        assert [a.seq for a in acks] == [1, 2, 3, 4, 5] * 2
        assert acks[:5] == acks[5:]
        # after the commit, from memory
        again = writer.submit(first[2]._replace(msg_id=next(_ids))).result(10)
        assert again == acks[2]
        assert writer.submit(send(11, "m5")).result(10).seq == 6
    # a restarted node: nothing in memory, the retry is found in the database
    with sequencing_writer(store, max_rows=64, max_ms=5) as writer:
        late = writer.submit_many([first[4]._replace(msg_id=next(_ids)), send(11, "m6")])
        assert late[0].result(10) == acks[4]
        assert late[1].result(10).seq == 7
    assert {r.seq for r in stored_messages(store)} == set(range(1, 8))


@pytest.mark.timeout(90)
def test_killed_flush_fails_the_batches_stamped_behind_it_and_leaves_no_gap(
    store: Store, db_url: str
) -> None:
    faults = Faults(store, db_url)
    x, y = 3, 11  # same shard table: one flush holds both
    writer = sequencing_writer(store, max_rows=10, max_ms=60_000)
    try:
        head = [send(x, "a0")]
        behind = (
            [send(x, f"a{i}") for i in range(1, 6)]
            + [send(y, f"b{i}") for i in range(5)]
            + [send(x, f"a{i}") for i in range(6, 11)]
            + [send(y, f"b{i}") for i in range(5, 10)]
        )
        rest = [send(y, f"b{i}") for i in range(10, 15)]
        with faults.stall(MessageRow(x, 1, 0, 0, "stall", 0, "")):
            head_futs = writer.submit_many(head)
            faults.wait_stalled(writer, head[0]._replace(seq=1))
            behind_futs = writer.submit_many(behind)
            # one batch of ten sealed behind the stalled flush, the next stamped and waiting
            wait_until(lambda: writer.backlog == 0, what="two batches stamped")
            rest_futs = writer.submit_many(rest)
            faults.kill(writer, head_futs + behind_futs)
        for fut in head_futs + behind_futs:
            with pytest.raises(FlushFailed):
                fut.result(0)
        # the sends after the failure start again from the database: y from 1, and nothing of
        # x committed
        wait(rest_futs, timeout=30)
        retried = store_all(
            writer, [r for r, f in zip(rest, rest_futs, strict=True) if f.exception() is not None]
        )
        acked = {
            (r.conv_id, r.sender, r.client_msg_id): f.result()
            for r, f in zip(rest, rest_futs, strict=True)
            if f.exception() is None
        }
        acked.update(retried)
        acked.update(store_all(writer, head + behind))
        check_store(store, acked)
        assert len(stored_messages(store)) == 26
    finally:
        writer.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("memory", ["roomy", "tiny"])
def test_kills_ring_changes_and_retries_under_load_leave_no_gap(store: Store, memory: str) -> None:
    """Clients send (and re-send acked messages) until the writer's connection was killed
    mid-flush KILLS times and the ring changed RINGS times. A tiny sequencer forgets keys and
    conversations all the time, so retries are found in the database."""
    kills_wanted, rings_wanted = 30, 15
    sequencer = Sequencer(max_keys=20, max_convs=5) if memory == "tiny" else Sequencer()
    writer = sequencing_writer(store, sequencer, max_rows=64, max_ms=2)
    lookups = REGISTRY.get_sample_value("soim_storage_sequencer_lookups_total") or 0.0
    rnd = random.Random(5)
    convs = list(range(100, 140))
    stop = threading.Event()
    chaos = {"kills": 0, "rings": 0}

    def disturb() -> None:
        deadline = time.monotonic() + 60
        while chaos["kills"] < kills_wanted or chaos["rings"] < rings_wanted:
            assert time.monotonic() < deadline, chaos
            time.sleep(rnd.uniform(0.001, 0.01))  # the pace of the disturbances
            if rnd.random() < 0.75:
                chaos["kills"] += writer.abort_flush()
            else:
                writer.resequence()
                chaos["rings"] += 1
        stop.set()

    acked: dict[tuple[int, int, str], MessageRow] = {}
    lock = threading.Lock()

    def client(k: int) -> None:
        mine = random.Random(k)
        sent: list[MessageRow] = []
        for n in itertools.count():
            if stop.is_set():
                return
            batch = [send(mine.choice(convs), f"c{k}-{n}-{j}", sender=k) for j in range(5)]
            if sent and mine.random() < 0.3:  # a retry of something already acked
                batch.append(mine.choice(sent)._replace(msg_id=next(_ids)))
            got = store_all(writer, batch)
            sent += batch
            with lock:
                for key, ack in got.items():
                    assert acked.setdefault(key, ack) == ack, "a retry got another ack"

    disturber = threading.Thread(target=disturb)
    clients = [threading.Thread(target=client, args=(k,)) for k in range(1, 5)]
    disturber.start()
    for t in clients:
        t.start()
    disturber.join(timeout=70)
    stop.set()
    for t in clients:
        t.join(timeout=60)
    writer.close()
    assert not any(t.is_alive() for t in clients)
    assert chaos["kills"] >= kills_wanted and chaos["rings"] >= rings_wanted, chaos
    # the kills were real: half of them at least failed a flush (a kill counts only while a
    # flush is being written; one that lands between SQLite statements fails none)
    assert writer.stats().failed_flushes >= kills_wanted // 2, writer.stats()
    if memory == "tiny":  # keys forgotten: sends were looked up in the database
        assert REGISTRY.get_sample_value("soim_storage_sequencer_lookups_total") > lookups + 100
    check_store(store, acked)
    assert len(stored_messages(store)) == len(acked)


@pytest.mark.timeout(120)
def test_two_owners_racing_on_the_same_conversations_leave_no_gap(store: Store) -> None:
    """A ring change seen at different times: two nodes sequence the same conversations, each
    with its own sequencer; the keys of the table fail the loser's flush, never leave a gap."""
    writers = [sequencing_writer(store, max_rows=32, max_ms=1) for _ in range(2)]
    acked: dict[tuple[int, int, str], MessageRow] = {}
    lock = threading.Lock()

    def client(k: int) -> None:
        mine = random.Random(k)
        for n in range(40):
            batch = [
                send(mine.choice((201, 202, 203)), f"r{k}-{n}-{j}", sender=k) for j in range(4)
            ]
            got = store_all(writers[(k + n) % 2], batch)  # its send and retries go to one node
            with lock:
                acked.update(got)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=100)
    for w in writers:
        w.close()
    assert not any(t.is_alive() for t in threads)
    assert sum(w.stats().failed_flushes for w in writers) > 0, "the owners never raced"
    check_store(store, acked)
    assert len(stored_messages(store)) == len(acked) == 6 * 40 * 4


def lookups() -> float:
    return REGISTRY.get_sample_value("soim_storage_sequencer_lookups_total") or 0.0


def test_keys_are_looked_up_only_within_the_retry_window(store: Store) -> None:
    """A conversation loaded with messages looks unseen keys up for one retry window, then no
    more; a key evicted young is looked up until it is older than the window."""
    window = 1.0
    with sequencing_writer(store, max_rows=64, max_ms=5) as writer:
        first = writer.submit(send(21, "a")).result(10)
    with sequencing_writer(
        store, Sequencer(max_keys=1, retry_window_s=window), max_rows=64, max_ms=5
    ) as writer:
        before = lookups()
        assert writer.submit(send(21, "b")).result(10).seq == 2
        loaded = time.monotonic()  # the conversation was loaded before "b" was stamped
        assert writer.submit(first._replace(msg_id=next(_ids))).result(10) == first
        assert lookups() == before + 2  # within the window: both looked up, the retry found
        wait_until(lambda: time.monotonic() > loaded + window, what="the window to pass")
        before = lookups()
        c = writer.submit(send(21, "c")).result(10)
        assert c.seq == 3 and lookups() == before  # past the window: no lookup
        evicted_at = time.monotonic()
        assert writer.submit(send(21, "d")).result(10).seq == 4  # then "c" is evicted, young
        assert writer.submit(c._replace(msg_id=next(_ids))).result(10) == c
        assert lookups() == before + 1  # … so later sends are looked up: the retry is found
        wait_until(lambda: time.monotonic() > evicted_at + window, what="the window to pass")
        before = lookups()
        assert writer.submit(send(21, "e")).result(10).seq == 5
        assert lookups() == before
    assert {r.seq for r in stored_messages(store)} == {1, 2, 3, 4, 5}
