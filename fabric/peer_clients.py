"""RPC clients to live peers, one per peer, made on first use and closed when the peer goes.

Role: the caller side of node-to-node RPC — `get(node_id)` gives a connected `RpcClient` to that
peer's RPC ROUTER (Curve client with this node's key, to the server key the peer proved when it
was admitted); `drop(node_id)` closes it.
Peer sockets: one DEALER per peer, owned here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq
import zmq.asyncio

from fabric.membership import Membership
from fabric.methods import RpcError
from fabric.rpc_client import RpcClient
from schema import common_pb2 as pb


class PeerClients:
    """A pool of `RpcClient`s keyed by peer node id."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        membership: Membership,
        node_id: str,
        max_bytes: int,
        secure: Callable[[zmq.asyncio.Socket, bytes], None] | None,
    ) -> None:
        self.ctx = ctx
        self.membership = membership
        self.node_id = node_id
        self.max_bytes = max_bytes
        self._secure = secure
        self._clients: dict[str, RpcClient] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, node_id: str) -> RpcClient:
        """A client to the live peer `node_id`; RpcError(UNAVAILABLE) if it is not alive."""
        client = self._clients.get(node_id)
        if client is not None:
            return client
        peer = self.membership.get(node_id)
        if peer is None:
            raise RpcError(pb.UNAVAILABLE, f"peer {node_id} is not alive")
        key = peer.info.public_key.encode()
        secure = self._secure
        client = RpcClient(
            self.ctx,
            peer.info.endpoints["rpc"],
            node_id=self.node_id,
            max_bytes=self.max_bytes,
            secure=(lambda sock: secure(sock, key)) if secure is not None else None,
        )
        client.start()
        self._clients[node_id] = client
        return client

    def drop(self, node_id: str) -> None:
        """Close the client to `node_id` (its pending calls fail with UNAVAILABLE)."""
        client = self._clients.pop(node_id, None)
        if client is not None:
            task = asyncio.ensure_future(client.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every client."""
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.close() for c in clients), *self._closing, return_exceptions=True)
