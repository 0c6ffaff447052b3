"""Client sessions of one gateway: who is behind each connection.

Role: the gateway's session table — ROUTER identity → `Session` (user, device, token, last
seen, the connection that opened it: its Curve key and TCP fd, and the bytes sent to it not
yet taken), user → sessions, fd →
session, idle expiry. A session belongs to its connection: the gateway serves it only to
frames with the same routing id *and* Curve key, and ends it when that fd closes. The user of
a request always comes from here, never from the client. `on_fd(fd, present)` hears when a
connection gains or loses its session. No sockets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from fabric import timing


@dataclass
class Session:
    """One logged-in connection."""

    identity: bytes
    peer_key: bytes
    """The z85 Curve public key of the connection that opened the session (ZAP User-Id)."""
    user_id: int
    account: str
    nickname: str
    device: str
    token: str = ""
    token_expires_ms: int = 0
    fd: int = -1
    """The connection: its TCP socket's file descriptor in this process on the ZeroMQ plane,
    a negative number (-2, -3, ...) on the WebSocket plane (`nodes.gateway.web_plane`); -1:
    unknown."""
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    queued_bytes: int = 0
    """Bytes sent to this connection the client has not taken yet, as last estimated (see
    `nodes.gateway.backlog`)."""
    recent_bytes: int = 0
    """Bytes sent since the last periodic check of `queued_bytes`."""
    acked_mark: int = 0
    """The connection's tcpi_bytes_acked at the last measurement."""


class SessionTable:
    """All sessions of this gateway, by connection and by user."""

    def __init__(self, on_fd: Callable[[int, bool], None] = lambda fd, present: None) -> None:
        self._by_identity: dict[bytes, Session] = {}
        self._by_user: dict[int, dict[bytes, Session]] = {}
        self._by_fd: dict[int, Session] = {}
        self._on_fd = on_fd

    def __len__(self) -> int:
        return len(self._by_identity)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_identity.values()))

    def get(self, identity: bytes) -> Session | None:
        """The session of a connection, if it logged in."""
        return self._by_identity.get(identity)

    def of_user(self, user_id: int) -> list[Session]:
        """Every session of `user_id` on this gateway."""
        return list(self._by_user.get(user_id, {}).values())

    def on_fd(self, fd: int) -> Session | None:
        """The session opened on the connection `fd`."""
        return self._by_fd.get(fd)

    def add(self, session: Session) -> Session | None:
        """Record a session; returns the one it replaces on the same connection, if any."""
        old = self._by_identity.get(session.identity)
        if old is not None:
            self._drop_indexes(old)
        self._by_identity[session.identity] = session
        self._by_user.setdefault(session.user_id, {})[session.identity] = session
        if session.fd != -1:
            self._by_fd[session.fd] = session
            self._on_fd(session.fd, True)
        return old

    def remove(self, identity: bytes) -> Session | None:
        """Forget a connection's session."""
        session = self._by_identity.pop(identity, None)
        if session is not None:
            self._drop_indexes(session)
        return session

    def touch(self, identity: bytes, now: float) -> Session | None:
        """A frame came from `identity`: refresh its idle clock; return its session."""
        session = self._by_identity.get(identity)
        if session is not None:
            session.last_seen = now
        return session

    def expire(self, now: float) -> list[Session]:
        """Remove and return sessions idle for SESSION_IDLE_EXPIRY_S."""
        horizon = now - timing.SESSION_IDLE_EXPIRY_S
        idle = [s for s in self._by_identity.values() if s.last_seen < horizon]
        for session in idle:
            self.remove(session.identity)
        return idle

    def _drop_indexes(self, session: Session) -> None:
        if session.fd != -1 and self._by_fd.get(session.fd) is session:
            del self._by_fd[session.fd]
            self._on_fd(session.fd, False)
        sessions = self._by_user.get(session.user_id)
        if sessions is not None:
            sessions.pop(session.identity, None)
            if not sessions:
                del self._by_user[session.user_id]
