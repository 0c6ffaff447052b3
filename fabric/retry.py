"""The retry policy: which failed calls are asked again, after what pause, and by whom.

Role: the one place that decides retries. A `Policy` says which error codes may pass (the rest
never do: a refusal is an answer), how long to pause after each failure (exponential, jittered,
with RATE_LIMITED's own longer start: a token bucket refills meanwhile), and how many attempts a
call gets; `run` asks a call again by a policy, never past the caller's deadline. Only an rpc
whose .proto declares `idempotency_level` NO_SIDE_EFFECTS or IDEMPOTENT is ever asked again
(`Method.idempotency`).

Exactly one layer retries a given call, and the layers below it ask once (`ONCE`):
- soim → gateway, Send: the client's outbox (`tui.outbox`), until acknowledged, across
  reconnects, pausing by `RESEND`; the same client_msg_id is stored once.
- soim → gateway, Resume and the keepalive: the link's reconnect loop (`tui.link`), pausing by
  `RECONNECT`.
- soim → gateway, the background sync (a Sync and the History pages that fill the gaps it
  finds, and the History that fills a gap a push shows): the session (`tui.session`) by
  `RESYNC`, each call asked once; a whole sync is started again until one completes (or the
  next reconnect or SyncHint starts one). `catch_up`, a caller waiting for its sync, is not
  a background sync: its calls are the RPC client's, by `CALL`.
- soim → gateway, any other rpc: the RPC client (`fabric.rpc_client`) by `CALL`, within the
  call's deadline.
- gateway → directory, router, storage: `nodes.gateway.upstream.Upstream` by `CALL` within
  the upstream deadline, a directory call going to a live directory not asked yet;
  except StoreBatch, asked once: the sends it carries are retried end to end by their clients'
  outboxes, and each retry finds the conversation's owner anew.
- any other call between nodes (storage → routers and directories, probes, soimctl): the RPC
  client by `CALL`.
No sockets.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from fabric import timing
from fabric.methods import IDEMPOTENCY_UNKNOWN, RpcError
from schema import common_pb2 as pb

T = TypeVar("T")
ASKED_ONCE = IDEMPOTENCY_UNKNOWN
"""The idempotency of an rpc whose .proto declares none: never asked again."""

TRANSIENT = frozenset({pb.TIMEOUT, pb.UNAVAILABLE, pb.RATE_LIMITED})
"""Codes that may pass for any idempotent call: no answer in time, no live node, too fast.
Not DEADLINE_EXCEEDED (the server is behind its queue: asking again within the same deadline
adds to it); only a client's send, which waits for no deadline, is resent after it."""


@dataclass(frozen=True, slots=True)
class Policy:
    """When a failed call is asked again, and after what pause.

    After the n-th failure in a row the pause is `first_s` * 2^(n-1), at most `max_s`, then
    jittered: drawn uniformly from [(1 - jitter) * that, that]. After RATE_LIMITED the doubling
    starts from `rate_limited_first_s` instead.
    """

    attempts: int
    """Most attempts of one call by `run`, the first included; 0: as many as the deadline
    allows."""
    first_s: float
    max_s: float
    retriable: frozenset[int]
    """The error codes after which the call is asked again; any other is its answer."""
    rate_limited_first_s: float
    jitter: float = 0.5

    def retries(self, code: int, idempotency: int) -> bool:
        """Is a call of this idempotency that failed with `code` asked again?"""
        return idempotency != ASKED_ONCE and code in self.retriable

    def tries(self, idempotency: int) -> int:
        """Most attempts of a call of this idempotency (0: as many as its deadline allows)."""
        return self.attempts if idempotency != ASKED_ONCE else 1

    def until(self, deadline: float, tries: int, failures: int) -> float:
        """The deadline of the next attempt (time.monotonic()): an equal share of what is left
        of `deadline` among the attempts left, so a silent peer leaves time to try again."""
        now = time.monotonic()
        return now + max(deadline - now, 0.0) / (tries - failures if tries else 1)

    def pause(self, failures: int, code: int, rand: Callable[[], float] = random.random) -> float:
        """The pause after the `failures`-th failure in a row, the last with `code`."""
        first = self.rate_limited_first_s if code == pb.RATE_LIMITED else self.first_s
        top = min(first * 2.0 ** max(failures - 1, 0), self.max_s)
        return top * (1.0 - self.jitter * rand())


ONCE = Policy(attempts=1, first_s=0.0, max_s=0.0, retriable=frozenset(), rate_limited_first_s=0.0)
"""Ask once: a layer above owns this call's retries."""

CALL = Policy(
    attempts=timing.RPC_MAX_ATTEMPTS,
    first_s=timing.RPC_RETRY_BACKOFF_S,
    max_s=1.0,
    retriable=TRANSIENT,
    rate_limited_first_s=0.25,
)
"""An RPC within its deadline: each attempt gets an equal share of the time left."""

RESEND = Policy(
    attempts=0,  # the outbox resends until acknowledged or refused (tui.outbox)
    first_s=0.1,
    max_s=1.0,
    retriable=TRANSIENT | {pb.UNAUTHENTICATED, pb.INTERNAL, pb.NOT_OWNER, pb.DEADLINE_EXCEEDED},
    rate_limited_first_s=0.5,
)
"""A client's send until acknowledged: also after the gateway forgot the session (resume
first), failed inside (INTERNAL), or found the owner moved or the request late."""

RECONNECT = Policy(
    attempts=0,  # the link reconnects until resumed or refused
    first_s=0.2,
    max_s=5.0,
    retriable=TRANSIENT,
    rate_limited_first_s=0.5,
)
"""A client's reconnect and resume: a crowd resuming at once may meet rate limits."""

RESYNC = Policy(
    attempts=0,  # the session syncs again until a sync completes (tui.session)
    first_s=0.5,
    max_s=5.0,
    retriable=TRANSIENT | {pb.DEADLINE_EXCEEDED, pb.INTERNAL},
    rate_limited_first_s=1.0,
)
"""A client's background sync, started again whole after a failed call: each sync is a new
request, so a server that was behind (DEADLINE_EXCEEDED) or failed inside is asked again; any
other refusal waits for the next reconnect or SyncHint."""


async def run(
    attempt: Callable[[float], Awaitable[T]],
    *,
    policy: Policy,
    idempotency: int,
    deadline: float,
    failed: RpcError | None = None,
    rand: Callable[[], float] = random.random,
) -> T:
    """`await attempt(until)` until it returns, asked again by `policy`; raise its last RpcError.

    `until` is the attempt's own deadline (`Policy.until`). No attempt starts or is given time
    past `deadline`, and no pause is begun that would end past it. `failed`: the first attempt,
    made by the caller itself (`Policy.until(deadline, tries, 0)`), failed with this error.
    """
    tries = policy.tries(idempotency)
    failures = 0
    err = failed
    while True:
        if err is not None:
            failures += 1
            if failures == tries or not policy.retries(err.code, idempotency):
                raise err
            pause = policy.pause(failures, err.code, rand)
            if time.monotonic() + pause >= deadline:
                raise err
            await asyncio.sleep(pause)  # the retry backoff, within the deadline
            if time.monotonic() >= deadline:  # the sleep overran it
                raise err
        try:
            return await attempt(policy.until(deadline, tries, failures))
        except RpcError as again:
            err = again
