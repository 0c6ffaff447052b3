"""The storage node's message-id buffer on a real SQLite store: requests that find it short are
served in arrival order, and a request that arrives later never overtakes them, so the sends
of one gateway keep their order across a refill; a refill that fails answers UNAVAILABLE."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fabric.methods import RpcError
from nodes.storage.msg_ids import STEP, MsgIds
from schema import common_pb2 as pb
from shard_store import SegmentAllocator, Store
from tests.support import async_wait_until


@pytest.mark.timeout(30)
def test_short_requests_are_served_in_arrival_order(tmp_path: Path) -> None:
    async def scenario(ids: MsgIds) -> list[tuple[str, list[int]]]:
        got: list[tuple[str, list[int]]] = []
        errors: list[RpcError] = []
        assert ids.take_now(5) is None  # empty: a refill starts
        ids.take(5, lambda v: got.append(("first", v)), errors.append)
        assert ids.take_now(1) is None  # someone is waiting: this one queues behind
        ids.take(1, lambda v: got.append(("second", v)), errors.append)
        await async_wait_until(lambda: len(got) == 2, what="both requests served")
        later = ids.take_now(3)
        assert later is not None
        got.append(("later", later))
        assert not errors
        return got

    with Store.open(f"sqlite:{tmp_path}", 8) as store, ThreadPoolExecutor(1) as pool:
        allocator = SegmentAllocator(store, default_step=STEP)
        try:
            got = asyncio.run(scenario(MsgIds(allocator, pool)))
        finally:
            allocator.close()
    assert [name for name, _ in got] == ["first", "second", "later"]
    flat = [i for _, ids in got for i in ids]
    assert [len(ids) for _, ids in got] == [5, 1, 3]
    assert flat == sorted(flat) and len(set(flat)) == len(flat)


@pytest.mark.timeout(30)
def test_a_failed_refill_answers_unavailable(tmp_path: Path) -> None:
    async def scenario(ids: MsgIds) -> list[RpcError]:
        errors: list[RpcError] = []
        ids.take(2, lambda v: pytest.fail(f"served {v} from a closed store"), errors.append)
        await async_wait_until(lambda: errors, what="the refill to fail")
        return errors

    store = Store.open(f"sqlite:{tmp_path}", 8)
    allocator = SegmentAllocator(store, default_step=STEP)
    allocator.close()
    store.close()
    with ThreadPoolExecutor(1) as pool:
        errors = asyncio.run(scenario(MsgIds(allocator, pool)))
    assert [e.code for e in errors] == [pb.UNAVAILABLE]
