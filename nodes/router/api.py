"""The router's public surface: its RPC catalogue and the delivery events it publishes.

Role: the names both ends agree on — gateways and storage nodes call `ROUTER[...]` methods on a
router's RPC ROUTER, and gateways subscribe to `delivery_topic(their node id)` on every router's
events PUB to receive `GatewayDelivery` events (method `DELIVERY_METHOD`). No sockets.
"""

from __future__ import annotations

from fabric.methods import Method, catalogue
from schema import cluster_pb2

ROUTER: dict[str, Method] = catalogue(
    cluster_pb2.DESCRIPTOR.services_by_name["Router"],
    idempotent=["BindSessions", "UnbindSessions", "Lookup", "OnlineUsers"],
)
"""Router RPCs by rpc name: BindSessions, UnbindSessions, Lookup, OnlineUsers, Deliver."""

DELIVERY_METHOD = "router.GatewayDelivery"
"""The event method of a `cluster_pb2.GatewayDelivery` on a router's events PUB."""

DELIVERY_TOPIC_PREFIX = b"dlv:"


def delivery_topic(gateway_id: str) -> bytes:
    """The PUB topic of deliveries for `gateway_id`.

    NUL-terminated, because SUB topics match by prefix: "gw-1" must not also receive "gw-10"'s.
    """
    return DELIVERY_TOPIC_PREFIX + gateway_id.encode() + b"\x00"
