"""Leaf segment ids on both backends: unique across processes, increasing within one, the next
range prefetched before the current one runs out."""

from __future__ import annotations

import multiprocessing
import threading
from itertools import pairwise

import pytest

from shard_store import SegmentAllocator, Store, StoreError
from tests.support import wait_until

PROCESSES = 4
IDS_EACH = 50_000


def take_ids(url: str, n: int) -> list[int]:
    """Runs in a child process: open the store and draw `n` ids of tag `msg`."""
    with Store.open(url, 8) as store:
        ids = SegmentAllocator(store, default_step=1000)
        try:
            return [ids.next_id("msg") for _ in range(n)]
        finally:
            ids.close()


@pytest.mark.timeout(90)
def test_four_processes_get_unique_increasing_ids(db_url: str) -> None:
    Store.open(db_url, 8).close()  # create the schema once, as a deployment would
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        result = pool.starmap_async(take_ids, [(db_url, IDS_EACH)] * PROCESSES)
        per_process = result.get(timeout=80)
    for ids in per_process:
        assert len(ids) == IDS_EACH
        assert all(a < b for a, b in pairwise(ids))
    everything = [i for ids in per_process for i in ids]
    assert len(set(everything)) == PROCESSES * IDS_EACH
    assert min(everything) >= 1


def test_threads_share_an_allocator_without_duplicates(store: Store) -> None:
    ids = SegmentAllocator(store, default_step=100)
    got: list[list[int]] = [[] for _ in range(4)]

    def draw(k: int) -> None:
        for _ in range(50):
            got[k].extend(ids.next_ids("user", 37))

    threads = [threading.Thread(target=draw, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    ids.close()
    flat = [i for part in got for i in part]
    assert len(flat) == len(set(flat)) == 4 * 50 * 37
    assert all(part == sorted(part) for part in got)


def _max_id(store: Store, tag: str) -> int:
    with store.home.connection() as conn:
        rows = conn.query("SELECT max_id FROM id_segment WHERE biz_tag = %s", (tag,))
    return int(rows[0][0]) if rows else 0


def test_next_range_is_prefetched_when_a_fifth_remains(store: Store) -> None:
    ids = SegmentAllocator(store, default_step=1000)
    try:
        assert ids.next_id("conv") == 1
        assert _max_id(store, "conv") == 1000
        ids.next_ids("conv", 798)  # 201 of 1000 left: not yet
        assert _max_id(store, "conv") == 1000
        ids.next_id("conv")  # 200 left: the background thread takes the next range
        wait_until(lambda: _max_id(store, "conv") == 2000, what="the prefetched range")
        assert ids.next_ids("conv", 201) == list(range(801, 1002))  # seamless hand-over
    finally:
        ids.close()


def test_tags_are_independent_and_continue_after_restart(store: Store) -> None:
    with_first = SegmentAllocator(store, default_step=10)
    assert with_first.next_ids("a", 3) == [1, 2, 3]
    assert with_first.next_ids("b", 2) == [1, 2]
    with_first.close()
    again = SegmentAllocator(store, default_step=10)
    try:
        assert again.next_id("a") == 11  # the rest of an unfinished range is never reused
    finally:
        again.close()


def test_bad_tags_and_closed_allocator(store: Store) -> None:
    ids = SegmentAllocator(store)
    with pytest.raises(ValueError):
        ids.next_id("no spaces")
    ids.close()
    with pytest.raises(StoreError):
        ids.next_id("fresh")
