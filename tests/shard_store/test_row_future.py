"""RowFuture behaves as a concurrent.futures.Future for every caller of the batch writer:
blocking `result`, `concurrent.futures.wait`, callbacks once each in order, final outcomes —
also when the settle races the waiter or the callback in another thread."""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, CancelledError, InvalidStateError, wait

import pytest

from shard_store.row_future import RowFuture


def test_outcomes_callbacks_and_final_state() -> None:
    seen: list[tuple[str, object]] = []
    ok: RowFuture[int] = RowFuture()
    ok.add_done_callback(lambda f: seen.append(("first", f.result())))
    ok.add_done_callback(lambda f: seen.append(("second", f.result())))
    assert not ok.done() and not ok.cancelled()
    ok.set_result(7)
    ok.add_done_callback(lambda f: seen.append(("late", f.result())))  # runs at once
    assert seen == [("first", 7), ("second", 7), ("late", 7)]
    assert ok.done() and ok.result(0) == 7 and ok.exception(0) is None
    with pytest.raises(InvalidStateError):
        ok.set_exception(ValueError("again"))
    assert ok.result() == 7

    failed: RowFuture[int] = RowFuture()
    failed.set_exception(ValueError("no"))
    assert isinstance(failed.exception(), ValueError)
    with pytest.raises(ValueError):
        failed.result()

    cancelled: RowFuture[int] = RowFuture()
    cancelled.add_done_callback(lambda f: seen.append(("cancelled", f.cancelled())))
    assert cancelled.cancel() and cancelled.cancel() and cancelled.done()
    assert seen[-1] == ("cancelled", True)
    with pytest.raises(CancelledError):
        cancelled.result()
    with pytest.raises(InvalidStateError):
        cancelled.set_result(1)  # the writer's settle of a cancelled row: suppressed there
    assert not ok.cancel()
    assert "finished" in repr(ok)


@pytest.mark.timeout(60)
def test_blocking_waiters_are_woken_however_the_settle_races_them() -> None:
    for i in range(500):
        fut: RowFuture[int] = RowFuture()
        other: RowFuture[int] = RowFuture()
        called = threading.Event()
        start = threading.Barrier(2)

        def settle(f: RowFuture[int] = fut, n: int = i, go: threading.Barrier = start) -> None:
            go.wait()
            f.set_result(n)

        t = threading.Thread(target=settle)
        t.start()
        start.wait()
        if i % 3 == 0:
            assert fut.result(timeout=10) == i
        elif i % 3 == 1:
            done, _ = wait([other, fut], timeout=10, return_when=FIRST_COMPLETED)
            assert done == {fut}
        else:
            fut.add_done_callback(lambda f, ev=called: ev.set())
            assert called.wait(10)
        t.join()
    unsettled: RowFuture[int] = RowFuture()
    done, not_done = wait([unsettled], timeout=0.01)
    assert not done and not_done == {unsettled}
