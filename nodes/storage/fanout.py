"""Fan-out: committed messages and moved cursors, handed to the routers owning their recipients.

Role: after a commit, every message goes to the routers owning each of its recipients — both
users of a 1:1 conversation, every member of a group — as one `Router.Deliver` per router per
batch, skipping the session that sent it (it has its ack). Receipts go the same way to the
friend of a direct conversation and to the user's other devices. Work is handled per commit, in
commit order, so one conversation's pushes leave in seq order: at once when it needs no member
list and nothing waits ahead of it, else queued for one task; a batch waits only for the member
lists of its groups (usually prefetched while the rows committed).
Each router has at most one Deliver in flight: pushes for a router that is still answering
the last one wait for its reply and leave together in the next (under a moderate load a flush
is a message or two, and a call per router per flush was most of the fan-out's cost, here and
in the routers); a router that answers at once is called at once.
Delivery is best effort: a router or directory that fails loses those pushes (counted), and
clients recover them with Sync and History. Large batches are split under MAX_BATCH_BYTES.
Peer sockets: none of its own; routers and directories through the node's `PeerClients`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from prometheus_client import Counter

from fabric import timing
from fabric.membership import Membership
from fabric.methods import RpcError
from fabric.peer_clients import PeerClients
from fabric.ring import LiveRing, Ring
from nodes.storage.people import People
from schema import client_pb2, cluster_pb2
from schema.contracts.router import ROUTER
from shard_store.schema import MessageRow

log = logging.getLogger(__name__)
MAX_BATCH_BYTES = 1 << 20
"""A Deliver frame is split past this (the cluster frame limit is 4 MiB)."""
MEMBERS_WAIT_S = timing.UPSTREAM_TIMEOUT_S
ROUTER_CACHE = 500_000
"""User -> router answers cached before the cache starts over."""

DELIVERIES = Counter("soim_storage_deliveries_total", "Pushes handed to routers (per router)")
DELIVER_CALLS = Counter("soim_storage_deliver_calls_total", "Router.Deliver calls made")
LOST = Counter(
    "soim_storage_pushes_lost_total",
    "Pushes not handed to a router (no router, no member list, a failed call)",
)


@dataclass(frozen=True, slots=True)
class Stored:
    """A message as committed, with the StoreItem and gateway it came from."""

    row: MessageRow
    item: cluster_pb2.StoreItem
    gateway_id: str


@dataclass(frozen=True, slots=True)
class _Push:
    push: bytes
    users: tuple[int, ...]
    group: int
    skip: cluster_pb2.SessionRef


def chat_message(
    row: MessageRow, sender_account: str, to_user: int = 0, to_group: int = 0
) -> client_pb2.ChatMessage:
    """The client view of a stored row."""
    msg = client_pb2.ChatMessage()
    fill_chat_message(msg, row, sender_account, to_user, to_group)
    return msg


def fill_chat_message(
    msg: client_pb2.ChatMessage,
    row: MessageRow,
    sender_account: str,
    to_user: int = 0,
    to_group: int = 0,
) -> None:
    """Set an empty ChatMessage (e.g. a Push's, in place: no copy) to the client view of a row."""
    msg.conv_id = row.conv_id
    msg.seq = row.seq
    msg.msg_id = row.msg_id
    msg.sender = row.sender
    msg.sender_account = sender_account
    msg.body = row.body
    msg.ts_ms = row.ts
    msg.client_msg_id = row.client_msg_id
    msg.kind = client_pb2.MessageKind.ValueType(row.kind)
    msg.ref_seq = row.ref_seq
    if row.mentions:
        msg.mentions.extend(int(m) for m in row.mentions.split(","))
    if to_group:
        msg.to_group = to_group
    elif to_user:
        msg.to_user = to_user


class PushForwarder:
    """Queues pushes per commit and hands them to routers in order."""

    def __init__(self, membership: Membership, peers: PeerClients, people: People) -> None:
        self.membership = membership
        self.peers = peers
        self.people = people
        self._jobs: deque[list[_Push]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._live = LiveRing(membership, "router")
        self._ring = Ring()
        self._router_of: dict[int, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._held: dict[str, list[tuple[cluster_pb2.DeliverBatch, int]]] = {}
        """Batches per router not sent yet: its Deliver in flight is not answered."""
        self._busy: dict[str, int] = {}
        """Deliver calls in flight per router (the batches of one hand-off)."""
        self._stopped = False
        self._awaiting = False
        """The task waits for a job's member lists: jobs queued meanwhile go after it."""

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self, timeout_s: float) -> None:
        """Hand over what is queued (within `timeout_s`), then stop."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._jobs:
                    self._idle.clear()
                    self._wake.set()
                    await self._idle.wait()
                while self._calls:  # an answered call hands on what its router held
                    await asyncio.gather(*self._calls, return_exceptions=True)
        except TimeoutError:
            LOST.inc(sum(len(job) for job in self._jobs))
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, *self._calls, return_exceptions=True)
        LOST.inc(sum(len(b.deliveries) for out in self._held.values() for b, _ in out))
        self._held.clear()

    def messages(self, stored: list[Stored]) -> None:
        """Push newly committed messages to their recipients (the sender's other devices too)."""
        job = []
        for s in stored:
            item = s.item
            push = client_pb2.Push()
            fill_chat_message(push.message, s.row, item.sender_account, item.to_user, item.to_group)
            skip = cluster_pb2.SessionRef(
                user_id=item.sender, gateway_id=s.gateway_id, session_id=item.origin.session_id
            )
            users = () if item.to_group else (item.sender, item.to_user)
            job.append(_Push(push.SerializeToString(), users, item.to_group, skip))
        self._queue(job)

    def receipts(
        self, receipts: list[tuple[client_pb2.Receipt, int, cluster_pb2.SessionRef]]
    ) -> None:
        """Push moved cursors: (receipt, the friend or 0, the session that moved it)."""
        self._queue(
            [
                _Push(
                    client_pb2.Push(receipt=r).SerializeToString(),
                    (r.user_id, peer) if peer else (r.user_id,),
                    0,
                    skip,
                )
                for r, peer, skip in receipts
            ]
        )

    def _queue(self, job: list[_Push]) -> None:
        """Send a job now when nothing is ahead of it and it needs no member list (a flush of
        1:1 messages, receipts); else queue it for the task."""
        if not job:
            return
        if not (self._jobs or self._awaiting) and not any(p.group for p in job):
            self._send(job, {})
            return
        self._jobs.append(job)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._jobs:
                job = self._jobs.popleft()
                groups = {p.group for p in job if p.group}
                members: dict[int, tuple[int, ...]] = {}
                if groups:
                    self._awaiting = True  # later jobs wait behind this one
                    try:
                        async with asyncio.timeout(MEMBERS_WAIT_S):
                            members = await self.people.members(groups)
                    except (RpcError, TimeoutError) as err:
                        log.warning("group members unavailable, pushes lost: %s", err)
                self._send(job, members)
                self._awaiting = False
            self._idle.set()

    def _routers(self) -> Ring:
        ring = self._live.current()
        if ring is not self._ring:
            self._ring = ring
            self._router_of.clear()
        elif len(self._router_of) >= ROUTER_CACHE:
            self._router_of.clear()
        return self._ring

    def _by_router(self, ring: Ring, users: tuple[int, ...]) -> dict[str, list[int]]:
        """`users` grouped by the router owning them (owners cached per ring)."""
        out: dict[str, list[int]] = {}
        router_of = self._router_of
        for user in users:
            router = router_of.get(user)
            if router is None:
                router = router_of[user] = ring.owner(user)
            out.setdefault(router, []).append(user)
        return out

    def _send(self, job: list[_Push], members: dict[int, tuple[int, ...]]) -> None:
        """Add the job's pushes to each router's held batches; hand them to the routers with
        no Deliver in flight."""
        ring = self._routers()
        batches = self._held
        lost = 0
        for p in job:
            users = members.get(p.group) if p.group else p.users
            if not users or not ring:
                lost += 1
                continue
            for router_id, ids in self._by_router(ring, users).items():
                out = batches.setdefault(router_id, [])
                size = len(p.push) + 10 * len(ids) + 64
                if not out or out[-1][1] + size > MAX_BATCH_BYTES:
                    out.append((cluster_pb2.DeliverBatch(), 0))
                batch, used = out[-1]
                delivery = batch.deliveries.add(user_ids=ids, push=p.push)
                getattr(delivery, "except").CopyFrom(p.skip)
                out[-1] = (batch, used + size)
        if lost:
            LOST.inc(lost)
        for router_id in [r for r in batches if r not in self._busy]:
            self._hand_on(router_id)

    def _hand_on(self, router_id: str) -> None:
        """Call `router_id`'s Deliver with the batches held for it (it has none in flight)."""
        out = self._held.pop(router_id)
        self._busy[router_id] = len(out)
        for batch, _ in out:  # tasks start in creation order: frames leave in this order
            task = asyncio.ensure_future(self._deliver(router_id, batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _deliver(self, router_id: str, batch: cluster_pb2.DeliverBatch) -> None:
        DELIVER_CALLS.inc()
        try:
            await self.peers.get(router_id).call(
                ROUTER["Deliver"], batch, timeout=timing.UPSTREAM_TIMEOUT_S
            )
        except RpcError as err:
            LOST.inc(len(batch.deliveries))
            log.warning("Deliver to %s failed: %s", router_id, err)
        else:
            DELIVERIES.inc(len(batch.deliveries))
        finally:
            left = self._busy[router_id] - 1
            if left:
                self._busy[router_id] = left
            else:
                del self._busy[router_id]
                if router_id in self._held and not self._stopped:
                    self._hand_on(router_id)
