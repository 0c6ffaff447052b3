"""The consistent-hash ring: which live node of a role owns a key (a user id or a conv id).

Role: a pure function of the set of member node ids — every node that sees the same members
computes the same owner for every key, so routers, gateways and storage nodes agree without
talking. Each member gets VNODES points (virtual nodes) so keys spread evenly and a join or a
leave moves only about 1/N of them. `LiveRing` is the ring of the live nodes of one role as a
membership view sees them, the one way every role and tool builds it. No sockets.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fabric.membership import Membership

VNODES = 128
OWNERS_CACHED = 16_384
"""Keys whose owner one Ring remembers (a hot path asks the same conversations' owners on
every message); past that it forgets them all and starts again."""


def _point(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Ring:
    """An immutable ring over `members`; build a new one when membership changes. It remembers
    the owners it computed (up to OWNERS_CACHED keys): hashing a key is the costly part."""

    def __init__(self, members: Iterable[str] = (), vnodes: int = VNODES) -> None:
        self.members = frozenset(members)
        points = sorted(
            (_point(f"{m}#{i}".encode()), m) for m in self.members for i in range(vnodes)
        )
        self._hashes = [h for h, _ in points]
        self._owners = [m for _, m in points]
        self._owned: dict[int, str] = {}

    def __bool__(self) -> bool:
        return bool(self.members)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ring) and other.members == self.members

    def __hash__(self) -> int:
        return hash(self.members)

    def owner(self, key: int) -> str:
        """The member owning `key`; raises LookupError on an empty ring."""
        owner = self._owned.get(key)
        if owner is None:
            if not self._hashes:
                raise LookupError("the ring has no members")
            i = bisect.bisect(self._hashes, _point(key.to_bytes(8, "big")))
            owner = self._owners[i % len(self._owners)]
            if len(self._owned) >= OWNERS_CACHED:
                self._owned.clear()
            self._owned[key] = owner
        return owner

    def owners(self, keys: Iterable[int]) -> dict[str, list[int]]:
        """Keys grouped by owner, each group in the given order."""
        grouped: dict[str, list[int]] = {}
        for key in keys:
            grouped.setdefault(self.owner(key), []).append(key)
        return grouped


class LiveRing:
    """The ring of the live nodes of `role` as `membership` sees them now, and `include` (a
    node's own id: a node owns its share even before it sees itself). Ask `current()` on every
    use: the ring is rebuilt only when that set of nodes changes, and is the same object
    until then."""

    def __init__(self, membership: Membership, role: str, include: str = "") -> None:
        self.membership = membership
        self.role = role
        self.include = include
        self._ring = Ring([include] if include else ())

    def current(self) -> Ring:
        """The ring now (cheap: one look at the membership view's cached live list)."""
        members = {p.node_id for p in self.membership.alive(self.role)}
        if self.include:
            members.add(self.include)
        if members != self._ring.members:
            self._ring = Ring(members)
        return self._ring
