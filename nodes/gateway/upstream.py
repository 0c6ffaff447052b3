"""The gateway's calls into the cluster: directories (any live one), routers (by ring owner).

Role: turn "ask the directory", "who of these users is online", "push this to those users",
"who is online anywhere" and "which storage node owns this conversation" into RPCs to the right
nodes, batched per owner and run concurrently; `Batched` turns many single asks (a token to
verify, a session to bind) into one call per event-loop pass. Every call has the upstream
deadline, within which this module (not the RPC client under it) asks an idempotent call again
by `fabric.retry.CALL`, a directory call on a live directory not asked yet; a caller
whose own caller retries (StoreBatch: the client's outbox) passes `ONCE`. A call that finds no
live directory waits up to NONE_ALIVE_WAIT_S for one (nothing was sent: a login to a gateway
that has just started, or during a directory's restart, is served rather than refused).
Peer sockets: DEALERs to directory, router and storage RPC ROUTERs, through `PeerClients`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from fabric import timing
from fabric.membership import Membership
from fabric.methods import Method, RpcError
from fabric.peer_clients import PeerClients
from fabric.retry import CALL, ONCE, Policy, run
from fabric.ring import LiveRing, Ring
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import DIRECTORY
from schema.contracts.router import ROUTER
from schema.contracts.storage import STORAGE

log = logging.getLogger(__name__)
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class Batched(Generic[ItemT, ResultT]):
    """One call in flight at a time, carrying every item submitted while the previous one was
    out (at most `max_items`; more go in the next call).

    `send(items)` makes the call and returns one result per item, in order. The first item of an
    event-loop pass starts the sender as a task, so every item submitted in the same pass (one
    batch pass of requests) goes in the same call. A failed call fails each of its items with the
    call's RpcError (any other exception: INTERNAL).
    """

    def __init__(
        self, send: Callable[[list[ItemT]], Awaitable[list[ResultT]]], max_items: int
    ) -> None:
        self._send = send
        self._max = max_items
        self._queue: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._task: asyncio.Task[None] | None = None

    def submit(self, item: ItemT) -> asyncio.Future[ResultT]:
        """Queue `item`; the future is its result."""
        fut: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return fut

    async def _run(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
                try:
                    results = await self._send([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RpcError(pb.INTERNAL, f"{len(results)} results for {len(batch)}")
                except RpcError as err:
                    _fail(batch, err.code, err.detail)
                    continue
                except Exception:
                    log.exception("batched call failed")
                    _fail(batch, pb.INTERNAL, "upstream call failed")
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():  # its caller may have given up (cancelled)
                        fut.set_result(result)
        finally:
            self._task = None


async def _when_alive(peer: Callable[[list[str]], str], tried: list[str], until: float) -> str:
    """`peer(tried)`; while it finds no live node (UNAVAILABLE: nothing was sent, so any call
    may wait) look again, for at most NONE_ALIVE_WAIT_S and never past `until`."""
    limit = min(until, time.monotonic() + timing.NONE_ALIVE_WAIT_S)
    while True:
        try:
            return peer(tried)
        except RpcError as err:
            if err.code != pb.UNAVAILABLE or time.monotonic() >= limit:
                raise
        await asyncio.sleep(timing.NONE_ALIVE_POLL_S)  # a node of the role may join meanwhile


def _fail(
    batch: list[tuple[Any, asyncio.Future[Any]]], code: pb.ErrorCode.ValueType, detail: str
) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(RpcError(code, detail))


class Upstream:
    """Directory and router calls of one gateway."""

    def __init__(self, membership: Membership, peers: PeerClients) -> None:
        self.membership = membership
        self.peers = peers
        self._turn = itertools.count()
        self._routers = LiveRing(membership, "router")
        self._storages = LiveRing(membership, "storage")

    async def _call(
        self, method: Method, peer: Callable[[list[str]], str], request: Message, retry: Policy
    ) -> Any:
        """Call `method` on the node `peer(tried)` names at each attempt (`tried`: the nodes
        asked before), asked again by `retry` within the upstream deadline; the RPC client under
        it asks once. A node found at once is asked without a wait's frame."""
        tried: list[str] = []

        async def attempt(until: float) -> Any:
            try:
                node_id = peer(tried)
            except RpcError as err:
                if err.code != pb.UNAVAILABLE:
                    raise
                node_id = await _when_alive(peer, tried, until)
            tried.append(node_id)
            return await self.peers.get(node_id).call(
                method, request, until - time.monotonic(), retry=ONCE
            )

        deadline = time.monotonic() + timing.UPSTREAM_TIMEOUT_S
        tries = retry.tries(method.idempotency)
        try:  # the first attempt here: the common case costs no retry frame
            return await attempt(deadline if tries == 1 else retry.until(deadline, tries, 0))
        except RpcError as err:
            if tries == 1:
                raise
            return await run(
                attempt,
                policy=retry,
                idempotency=method.idempotency,
                deadline=deadline,
                failed=err,
            )

    # ---- directory
    def directory(self, name: str, request: Message) -> Coroutine[Any, Any, Any]:
        """Call Directory.<name> on a live directory (round robin; a retry goes to one not asked
        yet, if any): the call's coroutine, to await."""
        return self._call(DIRECTORY[name], self._next_directory, request, CALL)

    def _next_directory(self, tried: list[str]) -> str:
        live = [p.node_id for p in self.membership.alive("directory")]
        if not live:
            raise RpcError(pb.UNAVAILABLE, "no directory node is alive")
        fresh = [node_id for node_id in live if node_id not in tried] or live
        return fresh[next(self._turn) % len(fresh)]

    # ---- storage
    def storage_ring(self) -> Ring:
        """The storage ring (by conversation id) as this gateway sees it now."""
        return self._storages.current()

    def storage_owner(self, conv_id: int) -> str:
        """The storage node owning `conv_id`; UNAVAILABLE when none is alive."""
        ring = self.storage_ring()
        if not ring:
            raise RpcError(pb.UNAVAILABLE, "no storage node is alive")
        return ring.owner(conv_id)

    def storage(
        self, node_id: str, name: str, request: Message, retry: Policy = CALL
    ) -> Coroutine[Any, Any, Any]:
        """Call Storage.<name> on one storage node: the call's coroutine, to await."""
        return self._call(STORAGE[name], lambda _: node_id, request, retry)

    # ---- routers
    def ring(self) -> Ring:
        """The router ring as this gateway sees it now."""
        return self._routers.current()

    def router(self, router_id: str, name: str, request: Message) -> Coroutine[Any, Any, Any]:
        """Call Router.<name> on one router: the call's coroutine, to await."""
        return self._call(ROUTER[name], lambda _: router_id, request, CALL)

    async def lookup(self, user_ids: Iterable[int]) -> dict[int, list[cluster_pb2.SessionBinding]]:
        """Every session of each user, asking each owner router once."""
        ring = self.ring()
        if not ring:
            return {}
        groups = ring.owners(set(user_ids))
        replies = await asyncio.gather(
            *(
                self.router(rid, "Lookup", cluster_pb2.UserIds(user_ids=ids))
                for rid, ids in groups.items()
            ),
            return_exceptions=True,
        )
        found: dict[int, list[cluster_pb2.SessionBinding]] = {}
        for reply in replies:
            if isinstance(reply, BaseException):
                continue  # that router's users count as offline until it answers again
            for entry in reply.users:
                if entry.sessions:
                    found[entry.user_id] = list(entry.sessions)
        return found

    async def online(self, user_ids: Iterable[int]) -> set[int]:
        """The users among `user_ids` with at least one session anywhere."""
        return set(await self.lookup(user_ids))

    async def deliver(self, user_ids: Iterable[int], push: bytes) -> None:
        """Push one serialized client Push to every session of these users (best effort)."""
        ring = self.ring()
        if not ring:
            return
        calls = [
            self.router(
                rid,
                "Deliver",
                cluster_pb2.DeliverBatch(
                    deliveries=[cluster_pb2.Delivery(user_ids=ids, push=push)]
                ),
            )
            for rid, ids in ring.owners(set(user_ids)).items()
        ]
        await asyncio.gather(*calls, return_exceptions=True)

    async def online_users(self, cursor: int, limit: int) -> tuple[list[int], bool]:
        """One page of online user ids above `cursor`, merged from every router."""
        routers = [p.node_id for p in self.membership.alive("router")]
        request = client_pb2.OnlineUsersRequest(cursor=cursor, limit=limit)
        replies = await asyncio.gather(
            *(self.router(rid, "OnlineUsers", request) for rid in routers), return_exceptions=True
        )
        ids: set[int] = set()
        more = False
        for reply in replies:
            if isinstance(reply, BaseException):
                raise RpcError(pb.UNAVAILABLE, "a router did not answer; try again")
            ids.update(reply.user_ids)
            more = more or reply.more
        page = sorted(ids)
        return page[:limit], more or len(page) > limit
