"""What the storage node needs to know from the directory, cached: group members, account names
and the two users of each direct conversation.

Role: fan-out needs a group's members, History needs each message's sender account and
recipient, read counts need members again. Stored messages carry none of that, so it is learned
from the StoreItems passing through (sender account, 1:1 recipient, group id), and asked of any
live directory otherwise (GroupMembers, Users, Conversations; concurrent asks for one group
share one call). Member lists are dropped when a directory publishes a CacheInvalidation naming
their group (topic "inv", which the node's events SUB follows), and live MEMBERS_TTL_S at most;
a list fetched while an invalidation arrived is used once but not kept. Account names and the
users of a conversation never change, so they are only bounded (least recently used go first);
an account name is dropped when an invalidation names its user (a deleted user's changes).
Peer sockets: none of its own; directories through the node's `PeerClients`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Any, TypeVar

from google.protobuf.message import Message

from fabric import envelope, timing
from fabric.membership import Membership
from fabric.methods import RpcError
from fabric.peer_clients import PeerClients
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import DIRECTORY

log = logging.getLogger(__name__)
MEMBERS_TTL_S = 30.0
MAX_ENTRIES = 200_000
DIRECT = client_pb2.CONV_KIND_DIRECT
GROUP = client_pb2.CONV_KIND_GROUP
UNKNOWN = client_pb2.CONV_KIND_UNSPECIFIED

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _remember(table: OrderedDict[K, V], key: K, value: V) -> None:
    table[key] = value
    table.move_to_end(key)
    if len(table) > MAX_ENTRIES:
        table.popitem(last=False)


class People:
    """Directory facts with caches. Use on the event loop only."""

    def __init__(self, membership: Membership, peers: PeerClients) -> None:
        self.membership = membership
        self.peers = peers
        self._members: dict[int, tuple[float, tuple[int, ...]]] = {}
        self._loading: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        self._fetches: set[asyncio.Task[None]] = set()
        self._epoch = 0
        self._accounts: OrderedDict[int, str] = OrderedDict()
        self._direct: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self._groups: OrderedDict[int, None] = OrderedDict()
        self._turn = 0

    # ---- learning from traffic
    def learn(self, item: cluster_pb2.StoreItem) -> None:
        """Remember what a StoreItem tells: its sender's account, its conversation's kind."""
        if self._accounts.get(item.sender) != item.sender_account and item.sender_account:
            _remember(self._accounts, item.sender, item.sender_account)
        if item.to_user:
            if item.conv_id not in self._direct:
                _remember(self._direct, item.conv_id, (item.sender, item.to_user))
        elif item.conv_id not in self._groups:
            _remember(self._groups, item.conv_id, None)

    def invalidated(self, topic: bytes, env: envelope.Envelope) -> None:
        """A directory's CacheInvalidation: drop the member lists and account names it names."""
        try:
            inv = envelope.parse_payload(cluster_pb2.CacheInvalidation, env.payload)
        except envelope.EnvelopeError:
            log.warning("bad CacheInvalidation from %s", env.header.sender)
            return
        self._epoch += 1
        for item in inv.items:
            if item.WhichOneof("item") == "membership":
                self._members.pop(item.membership.group_id, None)
            elif item.WhichOneof("item") == "user_id":  # e.g. deleted: its name is a tombstone's
                self._accounts.pop(item.user_id, None)

    # ---- group members
    def prefetch(self, group_ids: Iterable[int]) -> None:
        """Start loading the member lists not cached (a send is on its way to commit)."""
        missing = [g for g in set(group_ids) if self._cached(g) is None and g not in self._loading]
        if missing:
            self._load(missing)

    async def members(self, group_ids: Iterable[int]) -> dict[int, tuple[int, ...]]:
        """Member ids of each group (empty for an unknown group); RpcError if no directory."""
        wanted = set(group_ids)
        out = {g: m for g in wanted if (m := self._cached(g)) is not None}
        missing = [g for g in wanted - out.keys() if g not in self._loading]
        if missing:
            self._load(missing)
        for g in wanted - out.keys():
            out[g] = await asyncio.shield(self._loading[g])
        return out

    def _cached(self, group_id: int) -> tuple[int, ...] | None:
        entry = self._members.get(group_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def _load(self, group_ids: list[int]) -> None:
        loop = asyncio.get_running_loop()
        futures = {g: loop.create_future() for g in group_ids}
        self._loading.update(futures)
        self._fetches.add(task := asyncio.ensure_future(self._fetch(futures)))
        task.add_done_callback(self._fetches.discard)

    async def _fetch(self, futures: dict[int, asyncio.Future[tuple[int, ...]]]) -> None:
        epoch = self._epoch
        try:
            reply = await self._ask("GroupMembers", cluster_pb2.GroupIds(group_ids=list(futures)))
        except Exception as err:  # every waiter must hear of it, whatever it is
            failure = err if isinstance(err, RpcError) else RpcError(pb.INTERNAL, str(err))
            for g, fut in futures.items():
                self._loading.pop(g, None)
                fut.set_exception(failure)
                fut.exception()  # retrieved: a prefetch may have nobody waiting
            return
        found = {m.group_id: tuple(m.user_ids) for m in reply.groups}
        expires = time.monotonic() + MEMBERS_TTL_S
        for g, fut in futures.items():
            self._loading.pop(g, None)
            members = found.get(g, ())
            if epoch == self._epoch:
                self._members[g] = (expires, members)
            if g in found:
                _remember(self._groups, g, None)
            fut.set_result(members)

    # ---- accounts and conversations
    async def accounts(self, user_ids: Iterable[int]) -> dict[int, str]:
        """Account names of users (unknown users are left out)."""
        wanted = set(user_ids)
        missing = [u for u in wanted if u not in self._accounts]
        if missing:
            reply = await self._ask("Users", cluster_pb2.UserIds(user_ids=missing))
            for user in reply.users:
                _remember(self._accounts, user.user_id, user.account)
        return {u: self._accounts[u] for u in wanted if u in self._accounts}

    async def conversation(self, conv_id: int, user_id: int) -> tuple[int, tuple[int, int]]:
        """The kind of a conversation `user_id` is part of, and its two users when direct."""
        known = self._known(conv_id)
        if known is None:
            reply = await self._ask("Conversations", cluster_pb2.UserRef(user_id=user_id))
            for conv in reply.conversations:
                if conv.kind == DIRECT:
                    _remember(self._direct, conv.conv_id, (user_id, conv.peer_id))
                elif conv.kind == GROUP:
                    _remember(self._groups, conv.conv_id, None)
            known = self._known(conv_id)
        return known if known is not None else (UNKNOWN, (0, 0))

    def _known(self, conv_id: int) -> tuple[int, tuple[int, int]] | None:
        if conv_id in self._direct:
            return DIRECT, self._direct[conv_id]
        if conv_id in self._groups:
            return GROUP, (0, 0)
        return None

    async def _ask(self, name: str, request: Message) -> Any:
        live = self.membership.alive("directory")
        if not live:
            raise RpcError(pb.UNAVAILABLE, "no directory node is alive")
        self._turn += 1
        peer = live[self._turn % len(live)]
        return await self.peers.get(peer.node_id).call(
            DIRECTORY[name], request, timeout=timing.UPSTREAM_TIMEOUT_S
        )
