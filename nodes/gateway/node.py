"""The gateway node: client access over a Curve ROUTER on a well-known port.

Role today: a runnable member of the cluster — it starts, registers in zeroconf with its client
key in the TXT record, heartbeats, serves the fabric.* methods and stops gracefully. Client
sessions arrive with their own module here.
Peer sockets: those of `fabric.node.Node` (RPC ROUTER, events PUB, events SUB, peer DEALERs).
"""

from fabric.keys import load_gateway_public
from fabric.node import Node


class GatewayNode(Node):
    """A gateway."""

    role = "gateway"

    def client_key(self) -> str:
        return load_gateway_public(self.cfg.keys_dir).decode()
