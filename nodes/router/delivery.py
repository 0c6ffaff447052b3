"""Delivery fan-out: one Deliver batch → one GatewayDelivery per gateway holding its sessions.

Role: the pure part of `Router.Deliver`. For each Delivery of the batch, in order, find the
sessions of its users in the presence table, skip the `except` session, and group the session
ids by gateway; every gateway gets its pushes in batch order in one event. An event that would
pass the frame size limit (a large group on one gateway) is split into several, still in order;
a push too large to fit even with a single session is dropped and counted. The router node
publishes the events on its events PUB under `api.delivery_topic(gateway id)`.
No sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nodes.router.presence import Presence
from schema import cluster_pb2

# protobuf sizes, rounded up: a length-delimited field is a 1-byte tag, a varint length (at most
# 3 bytes below 2 MiB) and the bytes.
_FIELD_OVERHEAD = 4
_ITEM_OVERHEAD = _FIELD_OVERHEAD  # the SessionPush inside GatewayDelivery.items


@dataclass(slots=True)
class DeliveryEvents:
    """The outcome of one batch: the events to publish, in order, and what they carry."""

    events: list[tuple[str, cluster_pb2.GatewayDelivery]] = field(default_factory=list)
    sessions: int = 0  # session pushes published
    too_large: int = 0  # session pushes dropped: the push alone passes the size budget


class _GatewayEvents:
    """The events for one gateway, each under `budget` serialized bytes."""

    def __init__(self, router_id: str, budget: int) -> None:
        self.router_id = router_id
        self.budget = budget
        self.base = _FIELD_OVERHEAD + len(router_id.encode())
        self.done: list[cluster_pb2.GatewayDelivery] = []
        self.current = cluster_pb2.GatewayDelivery(router_id=router_id)
        self.size = self.base

    def add(self, session_ids: list[bytes], push: bytes) -> int:
        """Append one push for `session_ids`; return how many sessions were dropped (too large)."""
        fixed = _ITEM_OVERHEAD + _FIELD_OVERHEAD + len(push)
        dropped = start = 0
        while start < len(session_ids):
            room = self.budget - self.size - fixed
            end = start
            while end < len(session_ids):
                cost = _FIELD_OVERHEAD + len(session_ids[end])
                if cost > room:
                    break
                room -= cost
                end += 1
            if end == start:
                if self.current.items:  # no room left here: go on in a fresh event
                    self._next()
                else:  # alone in an empty event it still does not fit
                    dropped += 1
                    start += 1
                continue
            item = self.current.items.add(push=push)
            item.session_ids.extend(session_ids[start:end])
            self.size = self.budget - room
            start = end
        return dropped

    def finish(self) -> list[cluster_pb2.GatewayDelivery]:
        if self.current.items:
            self.done.append(self.current)
        return self.done

    def _next(self) -> None:
        self.done.append(self.current)
        self.current = cluster_pb2.GatewayDelivery(router_id=self.router_id)
        self.size = self.base


def fan_out(
    presence: Presence, batch: cluster_pb2.DeliverBatch, router_id: str, budget: int
) -> DeliveryEvents:
    """The GatewayDelivery events of `batch`, each at most `budget` bytes serialized."""
    gateways: dict[str, _GatewayEvents] = {}
    out = DeliveryEvents()
    for delivery in batch.deliveries:
        skip = getattr(delivery, "except")
        skip_key = (skip.gateway_id, skip.session_id)
        targets: dict[str, list[bytes]] = {}
        for user_id in dict.fromkeys(delivery.user_ids):  # a session has one user: no repeats
            for key in presence.sessions_of(user_id):
                if key != skip_key:
                    targets.setdefault(key[0], []).append(key[1])
        for gateway_id, session_ids in targets.items():
            events = gateways.get(gateway_id)
            if events is None:
                events = gateways[gateway_id] = _GatewayEvents(router_id, budget)
            dropped = events.add(session_ids, delivery.push)
            out.too_large += dropped
            out.sessions += len(session_ids) - dropped
    for gateway_id, events in gateways.items():
        out.events.extend((gateway_id, event) for event in events.finish())
    return out
