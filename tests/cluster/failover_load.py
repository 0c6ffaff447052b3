"""Test support for the failover tests: a paced chat load whose every ack is timed.

`PacedLoad` has each member send to its target one message at a time, a pause between sends,
each retried with its client_msg_id until acked (the session's outbox), and records when each
ack came back; `stall` and `max_gap` read those times around a kill. `paired_members` sets up
the members, `check_nothing_lost` is every failover test's last word.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from schema import client_pb2
from tests.cluster.test_storage import Key, Member, befriend, check_database, history, register
from tests.harness import Cluster

PACE_S = 0.05
"""Pause between one member's sends: 20 a second each, well inside the session's limit."""


class PacedLoad:
    """Members sending to their targets until stopped; acks by key and their times by conv."""

    def __init__(self, members: list[Member], targets: list[dict[str, int]]) -> None:
        self.members = members
        self.targets = targets
        self.acked: dict[Key, client_pb2.SendAck] = {}
        self.times: dict[int, list[float]] = {}  # conv_id -> time.monotonic() of each ack
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Send until `stop()`."""
        await asyncio.gather(
            *(self._stream(m, t) for m, t in zip(self.members, self.targets, strict=True))
        )

    def stop(self) -> None:
        self._stop.set()

    def acks_since(self, since: float) -> int:
        """Acks that came at or after `since`, in every conversation."""
        return min((sum(t >= since for t in ts) for ts in self.times.values()), default=0)

    async def _stream(self, m: Member, target: dict[str, int]) -> None:
        for i in itertools.count():
            if self._stop.is_set():
                return
            cmid = f"{m.id}-{i}"
            ack = await m.client.send(f"{cmid} {'x' * (i % 50)}", client_msg_id=cmid, **target)
            self.times.setdefault(ack.conv_id, []).append(time.monotonic())
            assert self.acked.setdefault((ack.conv_id, m.id, cmid), ack) == ack
            await asyncio.sleep(PACE_S)  # the load's pace, not a synchronisation

    def stall(self, conv_id: int, at: float) -> float:
        """How long after `at` the conversation's next ack came."""
        return min(t for t in self.times[conv_id] if t >= at) - at

    def max_gap(self, conv_id: int, start: float, end: float) -> float:
        """The longest wait between two acks of a conversation that overlaps [start, end]."""
        ts = self.times[conv_id]
        return max(
            (b - a for a, b in itertools.pairwise(ts) if b >= start and a <= end), default=0.0
        )


async def paired_members(
    cluster: Cluster, prefix: str, pairs: int
) -> tuple[list[Member], list[dict[str, int]]]:
    """Twice `pairs` members registered on the first two gateways in turn, friends in pairs, and
    each member's target (its friend) for `PacedLoad`."""
    members = [await register(cluster, f"{prefix}{i:02d}", i % 2) for i in range(2 * pairs)]
    for a, b in zip(members[::2], members[1::2], strict=True):
        await befriend(a, b)
    return members, [{"to_user": members[i ^ 1].id} for i in range(len(members))]


async def check_nothing_lost(db: str, load: PacedLoad, members: list[Member]) -> None:
    """Every acked message is stored once, and every party of each conversation received
    exactly what is stored, once each and in seq order, with no gap."""
    await asyncio.to_thread(check_database, db, load.acked)
    await asyncio.gather(*(m.client.catch_up() for m in members))
    for conv in load.times:
        parties = [m for m in members if conv in m.client.tracker.last]
        stored = [(x.seq, x.msg_id) for x in await history(parties[0], conv)]
        assert [s for s, _ in stored] == list(range(1, len(stored) + 1))
        for member in parties:
            assert [(x.seq, x.msg_id) for x in member.seen(conv)] == stored
