"""Segment ids, Leaf style: each process takes ranges of ids per business tag (`user`, `conv`,
`msg`, …) from the unsharded `id_segment` table and hands them out from memory.

Role: unique, per-process increasing 64-bit ids without a round trip per id. A range is taken
with an optimistic UPDATE (compare-and-set on the `version` column), so no two processes ever
get the same range. When 20% of the current range remains, a background thread fetches the next
one (double buffer), so callers rarely wait. Connections: borrowed from database 0's pool by the
prefetch thread only.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass

from shard_store.backend import StoreError
from shard_store.store import Store

DEFAULT_STEP = 1000
PREFETCH_AT = 0.2
"""Fetch the next range when this fraction of the current one remains."""
WAIT_S = 5.0
"""Longest a caller waits for a range before StoreError."""
MAX_CAS_ATTEMPTS = 100
_TAG_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass
class _Tag:
    """The double buffer of one business tag; guarded by `cond`."""

    name: str
    cond: threading.Condition
    pos: int = 0
    end: int = 0
    size: int = 0
    spare: tuple[int, int] | None = None
    loading: bool = False
    error: StoreError | None = None


class SegmentAllocator:
    """Hands out ids per tag from prefetched ranges. Thread-safe; close() stops its thread."""

    def __init__(
        self, store: Store, *, default_step: int = DEFAULT_STEP, wait_s: float = WAIT_S
    ) -> None:
        if default_step < 1:
            raise ValueError(f"step must be positive, got {default_step}")
        self._db = store.home
        self._default_step = default_step
        self._wait_s = wait_s
        self._tags: dict[str, _Tag] = {}
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[_Tag | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="soim-segments", daemon=True)
        self._thread.start()

    def next_id(self, tag: str) -> int:
        """The next id of `tag`."""
        return self.next_ids(tag, 1)[0]

    def next_ids(self, tag: str, n: int) -> list[int]:
        """`n` ids of `tag`, increasing; may span two ranges. Raises StoreError on a deadline."""
        return [i for ids in self.next_ranges(tag, n) for i in ids]

    def next_ranges(self, tag: str, n: int) -> list[range]:
        """`n` ids of `tag` as increasing ranges, without an int object per id (for a caller
        that buffers many). Raises StoreError on a deadline."""
        t = self._tag(tag)
        out: list[range] = []
        got = 0
        deadline = time.monotonic() + self._wait_s
        with t.cond:
            while got < n:
                if t.pos < t.end:
                    take = min(n - got, t.end - t.pos)
                    out.append(range(t.pos, t.pos + take))
                    got += take
                    t.pos += take
                    self._maybe_prefetch(t)
                elif t.spare is not None:
                    (t.pos, t.end), t.spare = t.spare, None
                    t.size = t.end - t.pos
                    self._maybe_prefetch(t)
                elif t.error is not None:
                    err, t.error = t.error, None
                    raise err
                else:
                    self._request(t)
                    left = deadline - time.monotonic()
                    if left <= 0 or self._closed:
                        raise StoreError(f"no id range for {tag!r} within {self._wait_s} s")
                    t.cond.wait(left)
        return out

    def close(self) -> None:
        """Stop the prefetch thread (ids already handed out stay valid)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._requests.put(None)
        self._thread.join(timeout=self._wait_s + 1)
        for t in list(self._tags.values()):
            with t.cond:
                t.cond.notify_all()

    def _tag(self, name: str) -> _Tag:
        t = self._tags.get(name)
        if t is None:
            if not _TAG_RE.match(name):
                raise ValueError(f"bad business tag {name!r}")
            with self._lock:
                if self._closed:
                    raise StoreError("the segment allocator is closed")
                t = self._tags.setdefault(name, _Tag(name, threading.Condition()))
        return t

    def _maybe_prefetch(self, t: _Tag) -> None:
        if t.spare is None and t.end - t.pos <= t.size * PREFETCH_AT:
            self._request(t)

    def _request(self, t: _Tag) -> None:
        """Ask the thread for the next range of `t` (once); caller holds t.cond."""
        if not t.loading and t.spare is None and not self._closed:
            t.loading = True
            self._requests.put(t)

    def _run(self) -> None:
        while True:
            t = self._requests.get()
            if t is None:
                return
            try:
                lo, hi = self._take_range(t.name)
            except Exception as err:  # the thread must survive: callers get the error instead
                problem = (
                    err
                    if isinstance(err, StoreError)
                    else StoreError(f"id range for {t.name!r}: {type(err).__name__}: {err}")
                )
                with t.cond:
                    t.loading, t.error = False, problem
                    t.cond.notify_all()
                continue
            with t.cond:
                t.loading, t.spare, t.error = False, (lo, hi), None
                t.cond.notify_all()

    def _take_range(self, tag: str) -> tuple[int, int]:
        """Claim the next range of `tag` with compare-and-set; returns [lo, hi)."""
        with self._db.connection() as conn:
            for _ in range(MAX_CAS_ATTEMPTS):
                rows = conn.query(
                    "SELECT max_id, step, version FROM id_segment WHERE biz_tag = %s", (tag,)
                )
                if not rows:
                    conn.execute(
                        f"{self._db.insert_ignore} INTO id_segment "
                        "(biz_tag, max_id, step, version, updated) "
                        "VALUES (%s, 0, %s, 0, %s)",
                        (tag, self._default_step, _now_ms()),
                    )
                    continue
                max_id, step, version = (int(v) for v in rows[0])
                if step < 1:
                    raise StoreError(f"id_segment step of {tag!r} is {step}; it must be >= 1")
                won = conn.execute(
                    "UPDATE id_segment SET max_id = %s, version = %s, updated = %s "
                    "WHERE biz_tag = %s AND version = %s",
                    (max_id + step, version + 1, _now_ms(), tag, version),
                )
                if won == 1:
                    return max_id + 1, max_id + step + 1
        raise StoreError(f"id range for {tag!r}: lost the race {MAX_CAS_ATTEMPTS} times")


def _now_ms() -> int:
    return int(time.time() * 1000)
