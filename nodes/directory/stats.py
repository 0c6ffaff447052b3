"""The directory's role metrics: logins by outcome and cache lookups by result.

Role: define the directory's metric families; `counted_logins` wraps the Login handler so
every answer counts once (ok, or the error code in lower case: bad_credentials, locked_out,
account_disabled, rate_limited...), and `looked_up` counts one batch of cache lookups at once.
Peer sockets: none (served on the node's metrics endpoint, `fabric.metrics`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter

from fabric.methods import RpcError
from schema import common_pb2 as pb

LOGINS = Counter("soim_directory_logins_total", "Login requests answered, by outcome", ["outcome"])
CACHE_LOOKUPS = Counter(
    "soim_directory_cache_lookups_total",
    "Cache lookups by cache (friendships, direct, members), level (l1 in process, l2 Redis) "
    "and result (hit, miss)",
    ["cache", "level", "result"],
)

Req = TypeVar("Req")
Call = TypeVar("Call")
Reply = TypeVar("Reply")


def counted_logins(
    login: Callable[[Req, Call], Awaitable[Reply]],
) -> Callable[[Req, Call], Awaitable[Reply]]:
    """`login`, counting each of its answers in soim_directory_logins_total."""

    async def counted(req: Req, call: Call) -> Reply:
        try:
            reply = await login(req, call)
        except RpcError as err:
            LOGINS.labels(_outcome(err.code)).inc()
            raise
        LOGINS.labels("ok").inc()
        return reply

    return counted


def _outcome(code: int) -> str:
    if code not in pb.ErrorCode.values():
        return str(code)
    return pb.ErrorCode.Name(pb.ErrorCode.ValueType(code)).lower()


def looked_up(cache: str, level: str, hits: int, misses: int) -> None:
    """Count a batch of lookups in one cache level."""
    if hits:
        CACHE_LOOKUPS.labels(cache, level, "hit").inc(hits)
    if misses:
        CACHE_LOOKUPS.labels(cache, level, "miss").inc(misses)
