"""Bytes each client connection has not taken yet: the cap on a gateway's queued replies and pushes.

Role: bound, in bytes, what a gateway holds for one logged-in client (SOIM_CLIENT_QUEUE_BYTES),
and disconnect a client that stops reading instead of buffering for it without end. libzmq's
high-water marks count messages (1000 per connection), and 1000 History pages of up to 1.6 MB
each are far too much to hold.

How: every reply and push the gateway hands the client ROUTER for a session is counted, in the
bytes it will take on the wire (`wire_bytes`: each frame plus its CurveZMQ MESSAGE framing), into
`Session.queued_bytes`. The kernel says how far the client got: TCP_INFO's `tcpi_bytes_acked` is
what the client's TCP has received (its own buffers are its memory, not ours), and TIOCOUTQ what
our kernel still holds. Each measurement (`Connections.tcp_state`) subtracts the bytes acked
since the previous one, so `queued_bytes` estimates what sits in libzmq's pipe plus our kernel
send queue for that connection. A session is watched once its estimate passes a quarter of the
cap; every timing.CLIENT_QUEUE_CHECK_S the watched ones are measured, and one still over the cap
is disconnected (`on_over`: a NOTICE_SESSION_ENDED saying why, then the TCP connection is reset).
A burst that takes the estimate past twice the cap is measured at once and, if the client really
has not taken it, disconnected at once: per connection the gateway never holds much more than
twice the cap, whatever the client asks for. A measurement that finds our kernel send queue empty
also forgets counted bytes older than the previous check (libzmq drops messages past its
high-water mark silently; such bytes are never acked). The hot path costs one dict lookup and an
addition per message; the syscalls run about once per quarter-cap sent, and per check for
clients that are behind. Connections without a session are not counted: they may only call
Register/Login/Resume/Ping (small answers, rate-limited, at most 1000 queued) and are closed
after SOIM_AUTH_DEADLINE_S. Linux only (TCP_INFO with bytes_acked: 4.1+; elsewhere nothing is
capped).
No sockets of its own: it reads the client ROUTER's TCP connections through `Connections`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from fabric import timing
from nodes.gateway.sessions import Session, SessionTable

SHORT_FRAME_MAX = 222
"""The largest frame whose CurveZMQ MESSAGE (33 bytes more) still fits a 1-byte ZMTP length."""
SHORT_OVERHEAD = 35
LONG_OVERHEAD = 42
"""Bytes a frame costs on the wire beyond its own with CurveZMQ: the ZMTP header (2, or 9 past
255 bytes), "\\x07MESSAGE" (8), the short nonce (8), the flags byte (1) and the box's MAC (16);
measured against tcpi_bytes_acked with libzmq 4.3.5."""

TcpState = Callable[[int], tuple[int, int] | None]
"""`Connections.tcp_state(fd)`: (bytes acked by the peer, bytes in our send queue), or None."""
OnOver = Callable[[bytes, int], None]
"""Called (soon, on the loop) with the identity of a session too far behind and its bytes."""


def wire_bytes(frames: list[bytes]) -> int:
    """Bytes a routed message ([routing id, frames...]) takes on a CurveZMQ connection."""
    total = 0
    for i in range(1, len(frames)):
        n = len(frames[i])
        total += n + (SHORT_OVERHEAD if n <= SHORT_FRAME_MAX else LONG_OVERHEAD)
    return total


class Backlogs:
    """The per-session byte counts of one gateway's client socket; `start()` on the loop."""

    def __init__(
        self, sessions: SessionTable, cap_bytes: int, tcp_state: TcpState, on_over: OnOver
    ) -> None:
        self.cap_bytes = cap_bytes
        self._watch_from = cap_bytes // 4
        self._at_once = 2 * cap_bytes
        self._sessions = sessions
        self._tcp_state = tcp_state
        self._on_over = on_over
        self._watched: dict[bytes, Session] = {}
        self._over: set[bytes] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Measure the watched sessions every timing.CLIENT_QUEUE_CHECK_S."""
        self._task = asyncio.ensure_future(self._check_forever())

    async def close(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def opened(self, fd: int) -> None:
        """A session opened on connection `fd`: count from what the client has acked so far."""
        session = self._sessions.on_fd(fd)
        state = self._tcp_state(fd)
        if session is not None and state is not None:
            session.acked_mark = state[0]

    def sent(self, messages: Iterable[list[bytes]]) -> None:
        """Count messages just handed to the client socket (the hot path)."""
        get = self._sessions.get
        watch_from = self._watch_from
        for frames in messages:
            session = get(frames[0])
            if session is None:
                continue
            size = wire_bytes(frames)
            session.queued_bytes += size
            session.recent_bytes += size
            if session.queued_bytes >= watch_from:
                self._watched[session.identity] = session
                if session.queued_bytes >= self._at_once:
                    self._measure(session, settle=False)
                    if session.queued_bytes >= self._at_once:
                        self._too_far(session)

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(timing.CLIENT_QUEUE_CHECK_S)  # the check period
            self.check()

    def check(self) -> None:
        """Measure every watched session; disconnect those still over the cap."""
        for identity, session in list(self._watched.items()):
            if self._sessions.get(identity) is not session:
                del self._watched[identity]  # ended, or replaced on its connection
                continue
            self._measure(session, settle=True)
            if session.queued_bytes >= self.cap_bytes:
                self._too_far(session)
            elif session.queued_bytes < self._watch_from:
                del self._watched[identity]

    def _measure(self, session: Session, settle: bool) -> None:
        """Subtract what the client acked since the last measurement. With `settle` (the
        periodic check) and our send queue empty, nothing counted before the previous check can
        still be queued: libzmq had time to hand it to the kernel, so it was acked or dropped."""
        state = self._tcp_state(session.fd)
        if state is None:
            return  # the connection is gone: its session ends through the monitor
        acked, outq = state
        done = acked - session.acked_mark
        session.acked_mark = acked
        session.queued_bytes = max(0, session.queued_bytes - done)
        if settle:
            if outq == 0:
                session.queued_bytes = min(session.queued_bytes, session.recent_bytes)
            session.recent_bytes = 0

    def _too_far(self, session: Session) -> None:
        identity = session.identity
        self._watched.pop(identity, None)
        if identity in self._over:
            return
        self._over.add(identity)
        asyncio.get_running_loop().call_soon(self._disconnect, identity, session.queued_bytes)

    def _disconnect(self, identity: bytes, queued: int) -> None:
        try:
            self._on_over(identity, queued)  # its notice is counted too: no second call
        finally:
            self._over.discard(identity)
