"""Broken links to peers, from libzmq's socket monitor: a peer's death seen in its connection.

Role: follow one socket's monitor (the events SUB, connected to every peer's PUB) and report an
endpoint as lost when its connection broke (DISCONNECTED) and reconnecting to it is still refused
LINK_DEAD_CONFIRM_S later (a CLOSED after a failed connect: nothing listens there any more), and
as back once a handshake there succeeds again. A disconnect alone may be a blip (a peer rebinding
its PUB, a reset connection): it counts only while the reconnects keep failing. A killed process
is noticed this way in a few hundred milliseconds; a host that vanishes without closing its
connections is still noticed by its missing heartbeats.
Peer sockets: the monitor PAIR of the watched socket (inproc, created by libzmq).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from fabric import timing

_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED | zmq.EVENT_HANDSHAKE_SUCCEEDED
MAX_BROKEN = 1024
"""Broken links remembered at most (the oldest is dropped: a peer long gone)."""


class LinkWatch:
    """Calls `on_lost(endpoint)` once per confirmed break, `on_back(endpoint)` once it heals."""

    def __init__(
        self,
        sock: zmq.asyncio.Socket,
        on_lost: Callable[[str], None],
        on_back: Callable[[str], None],
    ) -> None:
        self._sock = sock
        self._on_lost = on_lost
        self._on_back = on_back
        self._broken: dict[str, float] = {}  # endpoint -> time.monotonic() of its DISCONNECTED
        self._lost: set[str] = set()
        self._monitor: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Follow the socket's monitor."""
        if self._task is None:
            self._monitor = self._sock.get_monitor_socket(_EVENTS)
            self._task = asyncio.ensure_future(self._follow(self._monitor))

    async def close(self) -> None:
        """Stop following; close the monitor socket."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        if self._monitor is not None:
            self._monitor.close(linger=0)

    def forget(self, endpoint: str) -> None:
        """No longer connected to `endpoint`: drop what was known of it."""
        self._broken.pop(endpoint, None)
        self._lost.discard(endpoint)

    async def _follow(self, monitor: zmq.asyncio.Socket) -> None:
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            endpoint = event["endpoint"].decode(errors="replace")
            self.seen(event["event"], endpoint, time.monotonic())

    def seen(self, kind: int, endpoint: str, now: float) -> None:
        """One monitor event on `endpoint` at `now`."""
        if kind == zmq.EVENT_DISCONNECTED:
            if endpoint not in self._broken and len(self._broken) >= MAX_BROKEN:
                self._broken.pop(next(iter(self._broken)))  # e.g. endpoints no longer followed
            self._broken.setdefault(endpoint, now)
        elif kind == zmq.EVENT_CLOSED:  # a connect failed: nothing accepts there now
            since = self._broken.get(endpoint)
            if (
                since is not None
                and endpoint not in self._lost
                and now - since >= timing.LINK_DEAD_CONFIRM_S
            ):
                self._lost.add(endpoint)
                self._on_lost(endpoint)
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._broken.pop(endpoint, None)
            if endpoint in self._lost:
                self._lost.discard(endpoint)
                self._on_back(endpoint)
