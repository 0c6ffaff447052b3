"""The gateway's role metrics: sessions, client connections and pushes.

Role: define the gateway's metric families and tie the gauges to the live tables they read
(`watch`), so a scrape reads the current figures and no hot path updates a gauge. Pushes are
counted once per batch sent to the client socket, as sent or dropped (a client's queue full).
Peer sockets: none (served on the node's metrics endpoint, `fabric.metrics`).
"""

from __future__ import annotations

from collections.abc import Sized
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

if TYPE_CHECKING:
    from nodes.gateway.connections import Connections
    from nodes.gateway.unauth import UnauthCount

SESSIONS = Gauge("soim_gateway_sessions", "Logged-in client sessions on this gateway")
CONNECTIONS = Gauge("soim_gateway_connections", "Client TCP connections open")
UNAUTHENTICATED = Gauge(
    "soim_gateway_unauthenticated_connections", "Client connections that hold no session yet"
)
UNAUTHENTICATED_LIMIT = Gauge(
    "soim_gateway_unauthenticated_limit",
    "SOIM_MAX_UNAUTH_TOTAL: past it new connections are closed",
)
PUSHES = Counter(
    "soim_gateway_pushes_total", "Pushes to clients, by result (sent, dropped)", ["result"]
)
PUSHES_SENT = PUSHES.labels("sent")
PUSHES_DROPPED = PUSHES.labels("dropped")
REBALANCED = Counter(
    "soim_gateway_rebalanced_total",
    "Sessions asked to move to a less loaded gateway (after a failover)",
)
SYNC_HINTS = Counter(
    "soim_gateway_sync_hints_total", "SyncHints pushed to sessions (each then runs a full Sync)"
)
REBIND_SNAPSHOTS = Counter(
    "soim_gateway_rebind_snapshots_total",
    "Full lists of this gateway's sessions sent to the routers",
)


def watch(sessions: Sized, connections: Connections, unauth: UnauthCount) -> None:
    """Point the gauges at this gateway's session table and connections."""
    SESSIONS.set_function(lambda: len(sessions))
    CONNECTIONS.set_function(lambda: len(connections))
    UNAUTHENTICATED.set_function(lambda: unauth.total)
    UNAUTHENTICATED_LIMIT.set(unauth.max_total)


def pushed(total: int, dropped: int) -> None:
    """Count one batch of `total` pushes, `dropped` of them not queued."""
    PUSHES_SENT.inc(total - dropped)
    if dropped:
        PUSHES_DROPPED.inc(dropped)
