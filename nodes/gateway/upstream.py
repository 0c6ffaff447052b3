"""The gateway's calls into the cluster: directories (any live one), routers (by ring owner).

Role: turn "ask the directory", "who of these users is online", "push this to those users",
"who is online anywhere" and "which storage node owns this conversation" into RPCs to the right
nodes, batched per owner and run concurrently. Every call has the upstream deadline.
Peer sockets: DEALERs to directory, router and storage RPC ROUTERs, through `PeerClients`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from fabric import timing
from fabric.membership import Membership
from fabric.methods import RpcError
from fabric.peer_clients import PeerClients
from fabric.ring import Ring
from nodes.directory.api import DIRECTORY
from nodes.router.api import ROUTER
from nodes.storage.api import STORAGE
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb


class Upstream:
    """Directory and router calls of one gateway."""

    def __init__(self, membership: Membership, peers: PeerClients) -> None:
        self.membership = membership
        self.peers = peers
        self._turn = itertools.count()
        self._ring = Ring()
        self._storage_ring = Ring()

    # ---- directory
    async def directory(self, name: str, request: Message) -> Any:
        """Call Directory.<name> on a live directory (round robin)."""
        live = self.membership.alive("directory")
        if not live:
            raise RpcError(pb.UNAVAILABLE, "no directory node is alive")
        peer = live[next(self._turn) % len(live)]
        return await self.peers.get(peer.node_id).call(DIRECTORY[name], request,
                                                       timeout=timing.UPSTREAM_TIMEOUT_S)

    # ---- storage
    def storage_ring(self) -> Ring:
        """The storage ring (by conversation id) as this gateway sees it now."""
        members = frozenset(p.node_id for p in self.membership.alive("storage"))
        if members != self._storage_ring.members:
            self._storage_ring = Ring(members)
        return self._storage_ring

    def storage_owner(self, conv_id: int) -> str:
        """The storage node owning `conv_id`; UNAVAILABLE when none is alive."""
        ring = self.storage_ring()
        if not ring:
            raise RpcError(pb.UNAVAILABLE, "no storage node is alive")
        return ring.owner(conv_id)

    async def storage(self, node_id: str, name: str, request: Message) -> Any:
        """Call Storage.<name> on one storage node."""
        return await self.peers.get(node_id).call(STORAGE[name], request,
                                                  timeout=timing.UPSTREAM_TIMEOUT_S)

    # ---- routers
    def ring(self) -> Ring:
        """The router ring as this gateway sees it now."""
        members = frozenset(p.node_id for p in self.membership.alive("router"))
        if members != self._ring.members:
            self._ring = Ring(members)
        return self._ring

    async def router(self, router_id: str, name: str, request: Message) -> Any:
        """Call Router.<name> on one router."""
        return await self.peers.get(router_id).call(ROUTER[name], request,
                                                    timeout=timing.UPSTREAM_TIMEOUT_S)

    async def lookup(self, user_ids: Iterable[int]) -> dict[int, list[cluster_pb2.SessionBinding]]:
        """Every session of each user, asking each owner router once."""
        ring = self.ring()
        if not ring:
            return {}
        groups = ring.owners(set(user_ids))
        replies = await asyncio.gather(*(
            self.router(rid, "Lookup", cluster_pb2.UserIds(user_ids=ids))
            for rid, ids in groups.items()), return_exceptions=True)
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
        calls = [self.router(rid, "Deliver", cluster_pb2.DeliverBatch(
                     deliveries=[cluster_pb2.Delivery(user_ids=ids, push=push)]))
                 for rid, ids in ring.owners(set(user_ids)).items()]
        await asyncio.gather(*calls, return_exceptions=True)

    async def online_users(self, cursor: int, limit: int) -> tuple[list[int], bool]:
        """One page of online user ids above `cursor`, merged from every router."""
        routers = [p.node_id for p in self.membership.alive("router")]
        request = client_pb2.OnlineUsersRequest(cursor=cursor, limit=limit)
        replies = await asyncio.gather(*(self.router(rid, "OnlineUsers", request)
                                         for rid in routers), return_exceptions=True)
        ids: set[int] = set()
        more = False
        for reply in replies:
            if isinstance(reply, BaseException):
                raise RpcError(pb.UNAVAILABLE, "a router did not answer; try again")
            ids.update(reply.user_ids)
            more = more or reply.more
        page = sorted(ids)
        return page[:limit], more or len(page) > limit
