"""Readiness: what /readyz asks of a node, and the checks roles build it from.

Role: `ask` runs a node's async `ready()` hook on its event loop from the metrics server's
request thread (the loop stays the only thread that reads the membership); `missing_roles`
names the roles absent from the live membership; `unsettled` says whether a live peer knows of
a node this one has not admitted yet (its rings would place work on the wrong node: it just
started, or a peer just joined); `DbCheck` runs a role's blocking database
probe (such as `shard_store.store.Store.ping`) in a worker thread and keeps the answer for
DB_CHECK_CACHE_S. Each answer is None (ready) or a one-line reason. Peer sockets: none of its
own (the probe borrows a pooled database connection).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from collections.abc import Awaitable, Callable, Iterable

from fabric import timing
from fabric.membership import Membership


def ask(
    loop: asyncio.AbstractEventLoop | None, ready: Callable[[], Awaitable[str | None]]
) -> str | None:
    """`ready()` run on `loop`, waited for in this (another) thread for READY_ANSWER_S."""
    if loop is None or loop.is_closed():
        return "starting"
    future = asyncio.run_coroutine_threadsafe(_call(ready), loop)
    try:
        return future.result(timeout=timing.READY_ANSWER_S)
    except concurrent.futures.TimeoutError:
        future.cancel()
        return f"event loop did not answer within {timing.READY_ANSWER_S:g}s"


async def _call(ready: Callable[[], Awaitable[str | None]]) -> str | None:
    return await ready()


def missing_roles(membership: Membership, roles: Iterable[str]) -> str | None:
    """'no live directory, storage' when those roles have no live member; None when all do."""
    missing = [role for role in roles if not membership.alive(role)]
    return f"no live {', '.join(missing)} in the membership" if missing else None


def unsettled(membership: Membership) -> str | None:
    """'membership settling: …' while a live peer's last heartbeat counted more live peers
    than this node sees (a peer only it knows of yet); None once none does."""
    live = membership.alive()
    ahead = [p for p in live if p.peers > len(live)]
    if not ahead:
        return None
    first = ahead[0]
    return f"membership settling: {first.node_id} sees {first.peers} peers, this node {len(live)}"


class DbCheck:
    """Does the database answer? Called on the event loop; the blocking probe runs in a worker
    thread, at most one at a time, and its answer is reused for DB_CHECK_CACHE_S."""

    def __init__(self, probe: Callable[[], None]) -> None:
        self._probe = probe
        self._answer: str | None = None
        self._at = -math.inf
        self._running: asyncio.Future[str | None] | None = None

    async def reason(self) -> str | None:
        """None when the database answered lately, else why not (one line)."""
        if time.monotonic() - self._at < timing.DB_CHECK_CACHE_S:
            return self._answer
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
        try:
            return await asyncio.wait_for(asyncio.shield(self._running), timing.DB_CHECK_TIMEOUT_S)
        except TimeoutError:
            return f"database did not answer within {timing.DB_CHECK_TIMEOUT_S:g}s"

    async def _run(self) -> str | None:
        try:
            await asyncio.to_thread(self._probe)
            answer = None
        except Exception as err:  # whatever the driver raises means "does not answer"
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            answer = f"database does not answer: {first}"
        self._answer, self._at, self._running = answer, time.monotonic(), None
        return answer
