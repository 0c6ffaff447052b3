"""The router's contract (schema/cluster.proto, `service Router`): called by gateways, storage
nodes and soimctl; its delivery events are followed by gateways.

Role: the names both ends agree on — `ROUTER[...]` methods on a router's RPC ROUTER, and the
`GatewayDelivery` events (method `DELIVERY_METHOD`) each gateway receives on topic
`delivery_topic(its node id)` of every router's events PUB. No sockets.
"""

from __future__ import annotations

from fabric.methods import Method, catalogue
from schema import cluster_pb2

ROUTER: dict[str, Method] = catalogue(cluster_pb2.DESCRIPTOR.services_by_name["Router"])
"""Router RPCs by rpc name: BindSessions, UnbindSessions, Lookup, OnlineUsers, Deliver."""

DELIVERY_METHOD = "router.GatewayDelivery"
"""The event method of a `cluster_pb2.GatewayDelivery` on a router's events PUB."""

DELIVERY_TOPIC_PREFIX = b"dlv:"


def delivery_topic(gateway_id: str) -> bytes:
    """The PUB topic of deliveries for `gateway_id`.

    NUL-terminated, because SUB topics match by prefix: "gw-1" must not also receive "gw-10"'s.
    """
    return DELIVERY_TOPIC_PREFIX + gateway_id.encode() + b"\x00"
