"""Client connections that hold no session, counted by source address over both client planes.

Role: the caps on connections without a session — SOIM_MAX_UNAUTH_PER_ADDR per IP address and
SOIM_MAX_UNAUTH_TOTAL in all — count the ZeroMQ plane's and the WebSocket plane's connections
together, so an address cannot hold the maximum on each plane. Each plane calls `add` when a
connection is accepted or its session ends, and `remove` when it opens a session or closes;
`add` names the cap the connection breaks, which the plane then closes. No sockets.
"""

from __future__ import annotations


class UnauthCount:
    """Connections without a session, by address and in total."""

    def __init__(self, max_per_addr: int, max_total: int) -> None:
        self.max_per_addr = max_per_addr
        self.max_total = max_total
        self.total = 0
        self._by_addr: dict[str, int] = {}

    def add(self, addr: str) -> str | None:
        """One more connection from `addr` holds no session; the cap it breaks
        ("unauth_per_addr" or "unauth_total"), or None."""
        self.total += 1
        n = self._by_addr[addr] = self._by_addr.get(addr, 0) + 1
        if n > self.max_per_addr:
            return "unauth_per_addr"
        if self.total > self.max_total:
            return "unauth_total"
        return None

    def remove(self, addr: str) -> None:
        """A connection from `addr` opened a session or closed."""
        self.total -= 1
        n = self._by_addr.get(addr, 0) - 1
        if n > 0:
            self._by_addr[addr] = n
        else:
            self._by_addr.pop(addr, None)
