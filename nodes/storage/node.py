"""The storage node: sequenced, batched message writes into the sharded message tables.

Role today: a runnable member of the cluster — it starts, registers in zeroconf, heartbeats,
serves the fabric.* methods and stops gracefully. The sequencer and batch writer arrive with
their own modules here.
Peer sockets: those of `fabric.node.Node` (RPC ROUTER, events PUB, events SUB, peer DEALERs).
"""

from fabric.node import Node


class StorageNode(Node):
    """A storage node."""

    role = "storage"
