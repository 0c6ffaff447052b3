"""Presence: the sessions of each user, as one router holds them (soft state, in memory).

Role: the router's table user id → sessions, where a session is a connection on a gateway
(gateway id, session id = the connection's ROUTER identity there) with the device it logged in
with. A user may have several sessions (devices, gateways); a session has one user at a time.
A second index by gateway lets a dead gateway's sessions go at once and a gateway's full
snapshot replace what the router held for it. Online users come out in ascending user id, one
page after a cursor. `bind` says whether the user had no session before, and `on_empty` hears
of every user whose last session went, however it went (presence announcements). Every
operation is a plain function on the event loop. No sockets: the router node feeds this from
its RPC handlers and membership callbacks.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

SessionKey = tuple[str, bytes]
"""(gateway id, session id): a connection, unique in the cluster."""

_NO_SESSIONS: Mapping[SessionKey, str] = {}


class Binding(NamedTuple):
    """One session of one user."""

    user_id: int
    gateway_id: str
    session_id: bytes
    device: str


class Presence:
    """User → sessions, indexed by gateway too."""

    def __init__(self, on_empty: Callable[[int], None] | None = None) -> None:
        self.on_empty = on_empty
        """Called with a user whose last session has just gone."""
        self._users: dict[int, dict[SessionKey, str]] = {}  # user → {(gw, sid): device}
        self._gateways: dict[str, dict[bytes, int]] = {}  # gw → {sid: user}
        self._sessions = 0
        self._sorted: list[int] | None = None  # user ids, ascending; lazily

    # ---- queries
    @property
    def session_count(self) -> int:
        """Sessions bound."""
        return self._sessions

    @property
    def user_count(self) -> int:
        """Users with at least one session."""
        return len(self._users)

    def sessions_of(self, user_id: int) -> Mapping[SessionKey, str]:
        """The sessions of `user_id` as {(gateway id, session id): device}; empty if offline.

        A live view: do not change the presence while iterating over it.
        """
        return self._users.get(user_id, _NO_SESSIONS)

    def bindings_of(self, user_id: int) -> list[Binding]:
        """The sessions of `user_id`, in the order they were bound."""
        return [
            Binding(user_id, gw, sid, device)
            for (gw, sid), device in self._users.get(user_id, _NO_SESSIONS).items()
        ]

    def users_after(self, cursor: int, limit: int) -> tuple[list[int], bool]:
        """Up to `limit` user ids greater than `cursor`, ascending, and whether more follow."""
        if self._sorted is None:
            self._sorted = sorted(self._users)
        start = bisect.bisect_right(self._sorted, cursor)
        page = self._sorted[start : start + limit]
        return page, start + limit < len(self._sorted)

    # ---- changes
    def bind(self, user_id: int, gateway_id: str, session_id: bytes, device: str) -> bool:
        """Record a session (again: the device is updated; under another user: it moves).
        True if the user had no session before."""
        owner = self._gateways.get(gateway_id, {}).get(session_id)
        if owner is not None and owner != user_id:
            self._remove(owner, gateway_id, session_id)
        sessions = self._users.get(user_id)
        first = sessions is None
        if sessions is None:
            sessions = self._users[user_id] = {}
            self._sorted = None
        key = (gateway_id, session_id)
        if key not in sessions:
            self._sessions += 1
        sessions[key] = device
        self._gateways.setdefault(gateway_id, {})[session_id] = user_id
        return first

    def unbind(self, user_id: int, gateway_id: str, session_id: bytes) -> bool:
        """Forget a session if it is bound to `user_id` (a stale unbind of a connection that has
        since logged in as someone else leaves the new binding alone). True if it was bound."""
        if self._gateways.get(gateway_id, {}).get(session_id) != user_id:
            return False
        self._remove(user_id, gateway_id, session_id)
        return True

    def drop_gateway(self, gateway_id: str) -> int:
        """Forget every session on `gateway_id`; return how many there were."""
        sessions = self._gateways.get(gateway_id)
        if not sessions:
            return 0
        dropped = list(sessions.items())
        for session_id, user_id in dropped:
            self._remove(user_id, gateway_id, session_id)
        return len(dropped)

    def replace_gateway(self, gateway_id: str, bindings: Iterable[Binding]) -> int:
        """Make `bindings` (all on `gateway_id`) the only sessions held for that gateway; return
        how many held sessions were dropped because the snapshot no longer has them."""
        fresh = list(bindings)
        keep = {(b.session_id, b.user_id) for b in fresh}
        stale = [
            (sid, uid)
            for sid, uid in self._gateways.get(gateway_id, {}).items()
            if (sid, uid) not in keep
        ]
        for session_id, user_id in stale:
            self._remove(user_id, gateway_id, session_id)
        for b in fresh:
            self.bind(b.user_id, gateway_id, b.session_id, b.device)
        return len(stale)

    def retain_users(self, keep: Callable[[int], bool]) -> int:
        """Forget the sessions of every user for whom `keep(user_id)` is false; return how many
        sessions went."""
        dropped = 0
        for user_id in [u for u in self._users if not keep(u)]:
            for gateway_id, session_id in list(self._users[user_id]):
                self._remove(user_id, gateway_id, session_id)
                dropped += 1
        return dropped

    def _remove(self, user_id: int, gateway_id: str, session_id: bytes) -> None:
        by_session = self._gateways[gateway_id]
        del by_session[session_id]
        if not by_session:
            del self._gateways[gateway_id]
        sessions = self._users[user_id]
        del sessions[(gateway_id, session_id)]
        self._sessions -= 1
        if not sessions:
            del self._users[user_id]
            self._sorted = None
            if self.on_empty is not None:
                self.on_empty(user_id)
