"""The router node: presence and routing over a consistent-hash ring of routers.

Role today: a runnable member of the cluster — it starts, registers in zeroconf, heartbeats,
serves the fabric.* methods and stops gracefully. Presence, the ring and delivery arrive with
their own module here.
Peer sockets: those of `fabric.node.Node` (RPC ROUTER, events PUB, events SUB, peer DEALERs).
"""

from fabric.node import Node


class RouterNode(Node):
    """A router."""

    role = "router"
