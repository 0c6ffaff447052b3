"""Sessions spread over the live gateways again after a failover: a gradual redirect.

Role: when a gateway dies its clients resume on the others, and a gateway that starts (or comes
back) gets only new logins; so every REBALANCE_INTERVAL_S a gateway holding more than its share
of the sessions — the total over the live gateways that are not draining, by the counts in
their heartbeats, over their number, plus REBALANCE_SLACK — asks some of its clients to move
to the gateways furthest below their share: a NOTICE_REDIRECT push, which the client follows by
resuming there with its token (nothing is lost: it syncs after the resume); a gateway is a
target once it has been up SOIM_REBALANCE_GRACE_S (default REBALANCE_GRACE_S; until then
logins are redirected to it, and it may not stay). A round moves at
most half of the excess and at most REBALANCE_PER_ROUND sessions, and the next round waits
until every other gateway has beaten REBALANCE_SETTLE_S after the last one (their counts then
include the moved sessions), so a crowd of clients never reconnects at once and two gateways
shedding load never overshoot. A session moves only to a gateway serving its plane: a ZeroMQ
session to one with a client endpoint (the redirect's `endpoint`), a WebSocket session to one
with a web endpoint (the redirect's `web`, which the browser client follows).
Peer sockets: none of its own (the notice goes out through the gateway's client socket).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from fabric import timing
from fabric.membership import Membership, Peer
from nodes.gateway import stats
from nodes.gateway.sessions import Session, SessionTable
from schema import client_pb2

log = logging.getLogger(__name__)


class Rebalancer:
    """Moves sessions off this gateway while it holds more than its share."""

    def __init__(
        self,
        gateway_id: str,
        membership: Membership,
        sessions: SessionTable,
        push: Callable[[list[bytes], bytes], None],
        grace_s: float = timing.REBALANCE_GRACE_S,
    ) -> None:
        self.gateway_id = gateway_id
        self.membership = membership
        self.sessions = sessions
        self._push = push
        self.grace_s = grace_s
        """How long another gateway must have been up to receive sessions."""
        self._moved_at = 0.0  # time.monotonic() of the last round that moved sessions
        self._asked: dict[bytes, float] = {}  # identity -> when it was asked to move

    async def run(self) -> None:
        """Rebalance every REBALANCE_INTERVAL_S, until cancelled."""
        while True:
            await asyncio.sleep(timing.REBALANCE_INTERVAL_S)  # the rebalancing period
            self.round(time.monotonic())

    def round(self, now: float) -> int:
        """One round at `now`: how many sessions were asked to move."""
        others = accepting_gateways(self.membership)
        settled = self._moved_at + timing.REBALANCE_SETTLE_S
        if not others or any(p.last_beat < settled for p in others):
            return 0  # alone, or some count may not include the last round's moves yet
        self._asked = {
            i: t
            for i, t in self._asked.items()
            if now - t < timing.REBALANCE_ASK_S and self.sessions.get(i) is not None
        }
        mine = len(self.sessions) - len(self._asked)  # those asked are leaving
        share = math.ceil((mine + sum(p.sessions for p in others)) / (len(others) + 1))
        excess = mine - share - timing.REBALANCE_SLACK
        if excess <= 0:
            return 0
        budget = min(timing.REBALANCE_PER_ROUND, math.ceil(excess / 2))
        movable = [s for s in self.sessions if s.identity not in self._asked and plane(s)]
        # a gateway that just started gets new logins first (the login redirect), and sessions
        # only once it has been up the grace (it may not stay)
        targets = sorted(
            (p for p in others if p.uptime_s >= self.grace_s),
            key=lambda p: p.sessions,
        )
        moved = 0
        for target in targets:
            room = min(share - target.sessions, budget - moved)
            if room <= 0:
                continue
            batch = [s for s in movable if plane(s) in target.info.endpoints][:room]
            if not batch:
                continue
            notice = client_pb2.Push(
                notice=redirect_notice(target, "rebalancing: please move to a less loaded gateway")
            ).SerializeToString()
            self._push([s.identity for s in batch], notice)
            for s in batch:
                self._asked[s.identity] = now
            taken = {s.identity for s in batch}
            movable = [s for s in movable if s.identity not in taken]
            moved += len(batch)
        if moved:
            self._moved_at = now
            stats.REBALANCED.inc(moved)
            log.info("asked %d sessions to move (share %d, had %d)", moved, share, mine)
        return moved


def accepting_gateways(membership: Membership) -> list[Peer]:
    """The other live gateways a client may be sent to: not draining, with a client plane."""
    return [
        p for p in membership.alive("gateway") if not p.draining and "client" in p.info.endpoints
    ]


def plane(session: Session) -> str:
    """The endpoint a gateway needs to take this session: "client" for the ZeroMQ plane (a TCP
    fd), "web" for the WebSocket plane (-2, -3, ...); "" for a session of neither."""
    if session.fd >= 0:
        return "client"
    return "web" if session.fd < -1 else ""


def serving(peers: list[Peer], session: Session) -> list[Peer]:
    """Those of `peers` that can take `session` (they serve its plane; one of neither plane is
    sent where ZeroMQ clients go)."""
    wanted = plane(session) or "client"
    return [p for p in peers if wanted in p.info.endpoints]


def redirect_to(target: Peer) -> client_pb2.Redirect:
    """Where `target` is: its client endpoint and key, and its WebSocket URL if it has one."""
    return client_pb2.Redirect(
        gateway_id=target.node_id,
        endpoint=target.info.endpoints["client"],
        server_key=target.info.client_key,
        web=target.info.endpoints.get("web", ""),
    )


def redirect_notice(target: Peer, text: str) -> client_pb2.Notice:
    """A NOTICE_REDIRECT sending a client to `target` (it resumes there with its token)."""
    redirect = redirect_to(target)
    return client_pb2.Notice(kind=client_pb2.NOTICE_REDIRECT, text=text, redirect=redirect)
