"""Presence announcements: the contacts of a user this router owns learn when it comes online
and when it goes offline.

Role: the router tells the announcer of its users' transitions — a fresh session (a login or
resume, `SessionBinding.fresh`) of a user that had none: online at once; the last session of a
user gone (unbound, its gateway dead, left out of a snapshot): offline after the grace
(SOIM_PRESENCE_GRACE_S, default OFFLINE_GRACE_S), and only if the user is still without a
session by then (a resume on another gateway, a rebalancing redirect, a reconnect within the
grace announces nothing) — here, or, if a ring change gave the user to another router during the
grace, at that router (a Router.Lookup there). Rebinds after a ring change and snapshots never
announce, and users whose sessions moved to another router are not announced offline — except
that a rebind of a user announced offline less than REPAIR_WINDOW_S ago announces it online
again: the router had lost sessions a gateway still holds (it thought that gateway dead for a
moment), so the offline was wrong. One task works through the
announcements, at most PASS_MAX per pass: one Directory.Contacts (audience: friends and
co-members who may see the user online) per user, with the pass's calls in parallel, then one
Router.Deliver per router owning some of the audience (its own users straight to the
gateways). Best effort: a failed call loses its announcements (counted), nothing is retried,
and a backlog beyond QUEUE_MAX is dropped (counted). Logins never wait for any of it.
A router that stops announces what it still holds before it says goodbye — the offlines still
in their grace too, of users still without a session (within HANDOVER_BUDGET_S); a router that
dies loses them, and those users' contacts see them online until their next contacts fetch.
Peer sockets: none of its own; directories and routers through the node's `PeerClients`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable

from prometheus_client import Counter

from fabric import timing
from fabric.background import Background
from fabric.membership import Membership
from fabric.methods import RpcError
from fabric.peer_clients import PeerClients
from fabric.ring import Ring
from schema import client_pb2, cluster_pb2
from schema.contracts.directory import DIRECTORY
from schema.contracts.router import ROUTER

log = logging.getLogger(__name__)

OFFLINE_GRACE_S = 3
"""Default of SOIM_PRESENCE_GRACE_S: a user whose last session went is announced offline only
if still without one this many seconds after, so a client moving to another gateway or
reconnecting does not flap."""
OFFLINE_GRACE_MAX_S = 3600
PASS_MAX = 32
"""Announcements handled in one pass (their Contacts calls run in parallel)."""
QUEUE_MAX = 20_000
"""Announcements waiting beyond this are dropped (counted): a burst never grows without bound."""
REPAIR_WINDOW_S = 60.0
"""How long a router remembers whom it announced offline (a rebind then means: back online)."""
HANDOVER_BUDGET_S = 1.5
"""How long a stopping router spends announcing what it still holds (within the node's
SHUTDOWN_BUDGET_S)."""
IDS_PER_DELIVER = 50_000
"""User ids in one Router.Deliver (a Contacts answer has at most 20,000)."""

ANNOUNCED = Counter(
    "soim_router_presence_announced_total",
    "Presence changes handed to the routers of the user's audience, by state",
    ["state"],
)
LOST = Counter(
    "soim_router_presence_lost_total",
    "Presence announcements lost (best effort, never retried), by reason",
    ["reason"],
)


class Announcer:
    """Debounces and sends the presence changes of the users one router owns."""

    def __init__(
        self,
        peers: PeerClients,
        membership: Membership,
        ring: Callable[[], Ring],
        router_id: str,
        deliver_here: Callable[[cluster_pb2.DeliverBatch], object],
        offline_now: Callable[[int], bool],
        grace_s: float = OFFLINE_GRACE_S,
    ) -> None:
        self.peers = peers
        self.membership = membership
        self.ring = ring
        self.router_id = router_id
        self.deliver_here = deliver_here
        self.offline_now = offline_now
        """Is the user this router's and still without a session?"""
        self.grace_s = grace_s
        self._leaving: dict[int, float] = {}  # user → when to announce it offline (ascending)
        self._queue: dict[int, bool] = {}  # user → online: to announce
        self._gone: dict[int, float] = {}  # user → when announced offline (ascending)
        self._wake = asyncio.Event()
        self._turn = 0
        self._runner = Background(self._run)
        self._online = ANNOUNCED.labels("online")
        self._offline = ANNOUNCED.labels("offline")

    def start(self) -> None:
        self._runner.start()

    async def announce_pending(self) -> None:
        """The router is stopping but its peers still count it alive: stop, and announce now
        what waits — the offlines still in their grace too, of users still without a session
        (best effort, within HANDOVER_BUDGET_S)."""
        await self._runner.stop()
        for user_id in self._leaving:
            if self.offline_now(user_id):
                self._queue.setdefault(user_id, False)
        self._leaving.clear()
        try:
            async with asyncio.timeout(HANDOVER_BUDGET_S):
                while self._queue:
                    await self._pass()
        except TimeoutError:
            LOST.labels("stopping").inc(len(self._queue))
        except Exception:
            log.exception("presence announcements at stop failed")

    async def close(self) -> None:
        await self._runner.stop()

    # ---- transitions (plain functions, called from the router's handlers)
    def came_online(self, user_id: int) -> None:
        """A fresh session of a user that had none here."""
        self._gone.pop(user_id, None)
        if self._leaving.pop(user_id, None) is not None:
            return  # back within the grace: its audience never saw it go
        if self._queue.get(user_id) is False:
            del self._queue[user_id]  # its offline was not sent yet: nothing changed
            return
        self._enqueue(user_id, True)

    def rebound(self, user_id: int) -> None:
        """A session rebound (a ring change, a snapshot) for a user that had none here: it never
        left — if it was announced offline, that was wrong: announce it online."""
        self._leaving.pop(user_id, None)
        if self._queue.get(user_id) is False:
            del self._queue[user_id]
        elif self._gone.pop(user_id, None) is not None:
            self._enqueue(user_id, True)

    def went_offline(self, user_id: int) -> None:
        """The user's last session here is gone: offline after the grace, unless it returns."""
        self._leaving.pop(user_id, None)
        self._leaving[user_id] = asyncio.get_running_loop().time() + self.grace_s
        self._wake.set()

    def _enqueue(self, user_id: int, online: bool) -> None:
        if user_id not in self._queue and len(self._queue) >= QUEUE_MAX:
            LOST.labels("queue_full").inc()
            return
        self._queue[user_id] = online
        self._wake.set()

    # ---- the work
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            timeout = None
            if self._leaving:
                first = next(iter(self._leaving.values()))
                timeout = max(0.0, first - loop.time())
            if not self._queue:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            self._wake.clear()
            now = loop.time()
            self._due(now)
            while self._gone and (
                next(iter(self._gone.values())) < now - REPAIR_WINDOW_S
                or len(self._gone) > QUEUE_MAX
            ):
                del self._gone[next(iter(self._gone))]
            if self._queue:
                try:
                    await self._pass()
                except Exception:
                    log.exception("presence announcement failed")

    def _due(self, now: float) -> None:
        """Queue the offline announcements whose grace is over (of a user another router owns
        now too: the pass asks that router)."""
        ring = self.ring()
        while self._leaving:
            user_id, when = next(iter(self._leaving.items()))
            if when > now:
                return
            del self._leaving[user_id]
            if ring.owner(user_id) != self.router_id or self.offline_now(user_id):
                self._enqueue(user_id, False)

    async def _pass(self) -> None:
        take = list(itertools.islice(self._queue.items(), PASS_MAX))
        for user_id, _ in take:
            del self._queue[user_id]
        ring = self.ring()
        audiences = await asyncio.gather(*(self._audience(u, on, ring) for u, on in take))
        batches: dict[str, list[cluster_pb2.DeliverBatch]] = {}
        counts: dict[str, int] = {}
        for (user_id, online), found in zip(take, audiences, strict=True):
            if found is None:
                continue
            account, audience = found
            self._gone.pop(user_id, None)
            if online:
                self._online.inc()
            else:
                self._offline.inc()
                if self.offline_now(user_id):  # (not back while its audience was asked)
                    self._gone[user_id] = asyncio.get_running_loop().time()
            if not audience:
                continue
            push = client_pb2.Push(
                presence=client_pb2.Presence(user_id=user_id, account=account, online=online)
            ).SerializeToString()
            by_router: dict[str, list[int]] = {}
            for viewer in audience:
                by_router.setdefault(ring.owner(viewer), []).append(viewer)
            for router_id, ids in by_router.items():
                out = batches.setdefault(router_id, [])
                if not out or counts[router_id] + len(ids) > IDS_PER_DELIVER:
                    out.append(cluster_pb2.DeliverBatch())
                    counts[router_id] = 0
                out[-1].deliveries.add(user_ids=ids, push=push)
                counts[router_id] += len(ids)
        calls = []
        for router_id, out in batches.items():
            for batch in out:
                if router_id == self.router_id:
                    self.deliver_here(batch)
                else:
                    calls.append(self._deliver(router_id, batch))
        await asyncio.gather(*calls)

    async def _audience(
        self, user_id: int, online: bool, ring: Ring
    ) -> tuple[str, list[int]] | None:
        """(account, who may see `user_id` online), or None if there is nothing to announce:
        an offline of a user another router owns now and holds a session of, or no answer."""
        owner = ring.owner(user_id)
        if not online and owner != self.router_id and not await self._offline_at(owner, user_id):
            return None
        live = self.membership.alive("directory")
        if not live:
            LOST.labels("no_directory").inc()
            return None
        self._turn += 1
        peer = live[self._turn % len(live)]
        try:
            reply = await self.peers.get(peer.node_id).call(
                DIRECTORY["Contacts"],
                cluster_pb2.ContactsRequest(user_id=user_id, audience=True),
                timeout=timing.UPSTREAM_TIMEOUT_S,
            )
        except RpcError as err:
            LOST.labels("contacts").inc()
            log.warning("Contacts of user %d failed, presence not announced: %s", user_id, err)
            return None
        return reply.account, list(reply.contacts)

    async def _offline_at(self, router_id: str, user_id: int) -> bool:
        """Does the router `router_id` hold no session of `user_id`? (False if it did not say.)"""
        try:
            reply = await self.peers.get(router_id).call(
                ROUTER["Lookup"],
                cluster_pb2.UserIds(user_ids=[user_id]),
                timeout=timing.UPSTREAM_TIMEOUT_S,
            )
        except RpcError as err:
            LOST.labels("lookup").inc()
            log.warning(
                "Lookup of user %d at %s failed, offline not announced: %s", user_id, router_id, err
            )
            return False
        return not any(entry.sessions for entry in reply.users)

    async def _deliver(self, router_id: str, batch: cluster_pb2.DeliverBatch) -> None:
        try:
            await self.peers.get(router_id).call(
                ROUTER["Deliver"], batch, timeout=timing.UPSTREAM_TIMEOUT_S
            )
        except RpcError as err:
            LOST.labels("deliver").inc(len(batch.deliveries))
            log.warning("presence Deliver to %s failed: %s", router_id, err)
