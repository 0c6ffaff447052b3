"""Client sessions of one gateway: who is behind each connection, and how fast they may talk.

Role: the gateway's session table — ROUTER identity → `Session` (user, device, token, last
seen), user → sessions, idle expiry and a per-session token-bucket rate limit. The identity is
the only thing that names a connection; the user of a request always comes from here, never
from the client. No sockets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
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
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    _tokens: float = timing.SESSION_RATE_BURST
    _refilled: float = field(default_factory=time.monotonic)

    def allow(self, now: float) -> bool:
        """Take one request from the bucket; False when the session is over its rate."""
        self._tokens = min(timing.SESSION_RATE_BURST,
                           self._tokens + (now - self._refilled) * timing.SESSION_RATE_PER_S)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class SessionTable:
    """All sessions of this gateway, by connection and by user."""

    def __init__(self) -> None:
        self._by_identity: dict[bytes, Session] = {}
        self._by_user: dict[int, dict[bytes, Session]] = {}

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

    def add(self, session: Session) -> Session | None:
        """Record a session; returns the one it replaces on the same connection, if any."""
        old = self._by_identity.get(session.identity)
        if old is not None:
            self._drop_user_index(old)
        self._by_identity[session.identity] = session
        self._by_user.setdefault(session.user_id, {})[session.identity] = session
        return old

    def remove(self, identity: bytes) -> Session | None:
        """Forget a connection's session."""
        session = self._by_identity.pop(identity, None)
        if session is not None:
            self._drop_user_index(session)
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

    def _drop_user_index(self, session: Session) -> None:
        sessions = self._by_user.get(session.user_id)
        if sessions is not None:
            sessions.pop(session.identity, None)
            if not sessions:
                del self._by_user[session.user_id]
