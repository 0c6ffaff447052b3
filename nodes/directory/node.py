"""The directory node: accounts, friends and groups over shard_store.

Role today: a runnable member of the cluster — it starts, registers in zeroconf, heartbeats,
serves the fabric.* methods and stops gracefully. Accounts, friends and groups arrive with their
own modules here.
Peer sockets: those of `fabric.node.Node` (RPC ROUTER, events PUB, events SUB, peer DEALERs).
"""

from fabric.node import Node


class DirectoryNode(Node):
    """A directory."""

    role = "directory"
