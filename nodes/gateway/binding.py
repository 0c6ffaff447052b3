"""Route binding: every session of this gateway is bound at the router owning its user.

Role: bind a session at login (the sessions opened while the previous BindSessions to the same
router was out go in one call), unbind it at logout or expiry, and keep every binding on the
owner of the current router ring — when a router joins, leaves or dies, the sessions whose
owner changed are bound at the new owner (one call per router), and their clients get a
`SyncHint` so they fetch what a push may have missed meanwhile; so do the clients of sessions
whose bind at login did not succeed (no router known yet, a failed call), once the loop binds
them: their login's sync may have run before a message no router could push to them.
Bindings a router refuses as not its own (its ring view lags ours) are retried shortly; every
REBIND_SNAPSHOT_INTERVAL_S each router gets the full list of this gateway's sessions it owns,
which heals anything else. A binding is marked `fresh` when it is a new session (the bind at
login, or the loop's first successful bind of a session whose login bind did not succeed) —
the router then tells the user's contacts it came online — and never in a rebind or snapshot.
Peer sockets: DEALERs to router RPC ROUTERs, through `Upstream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable

from fabric import timing
from fabric.background import Background
from fabric.methods import RpcError
from nodes.gateway import stats
from nodes.gateway.sessions import Session, SessionTable
from nodes.gateway.upstream import Batched, Upstream
from schema import cluster_pb2
from schema import common_pb2 as pb

log = logging.getLogger(__name__)
MAX_BINDINGS_PER_CALL = 1000
"""New sessions bound in one BindSessions call."""


class RouteBinder:
    """Keeps `sessions` bound on the router ring of `upstream`."""

    def __init__(
        self,
        gateway_id: str,
        sessions: SessionTable,
        upstream: Upstream,
        sync_hint: Callable[[list[bytes]], None],
    ) -> None:
        self.gateway_id = gateway_id
        self.sessions = sessions
        self.upstream = upstream
        self.sync_hint = sync_hint
        self.bound_at: dict[bytes, str] = {}
        self._late: set[bytes] = set()
        """Sessions whose bind at login did not succeed: a SyncHint once the loop binds them."""
        self._wake = asyncio.Event()
        self._binds: dict[str, Batched[cluster_pb2.SessionBinding, int]] = {}
        self._runner = Background(self._run)

    def start(self) -> None:
        """Start the reconcile loop."""
        self._runner.start()

    async def close(self) -> None:
        """Stop the loop."""
        await self._runner.stop()

    def ring_changed(self) -> None:
        """A router joined, left or died: reconcile now."""
        self._wake.set()

    def binding(self, session: Session, fresh: bool = False) -> cluster_pb2.SessionBinding:
        """The router's record of `session` (`fresh`: a new session, not a rebind)."""
        return cluster_pb2.SessionBinding(
            user_id=session.user_id,
            gateway_id=self.gateway_id,
            session_id=session.identity,
            device=session.device,
            fresh=fresh,
        )

    async def bind(self, session: Session) -> None:
        """Bind a new session at its owner; on any failure the loop binds it later.

        The sessions opened while the previous BindSessions to that router was out go in one call.
        """
        ring = self.upstream.ring()
        if not ring:
            self._late.add(session.identity)  # bound when a router joins (`ring_changed`)
            return
        owner = ring.owner(session.user_id)
        batched = self._binds.get(owner)
        if batched is None:
            batched = self._binds[owner] = Batched(
                functools.partial(self._bind_at, owner), MAX_BINDINGS_PER_CALL
            )
        try:
            code = await batched.submit(self.binding(session, fresh=True))
        except RpcError as err:
            log.warning("bind of user %d at %s failed: %s", session.user_id, owner, err)
            code = err.code
        if code == pb.OK:
            self.bound_at[session.identity] = owner
        else:
            self._late.add(session.identity)
            self._wake.set()

    async def _bind_at(self, owner: str, bindings: list[cluster_pb2.SessionBinding]) -> list[int]:
        reply = await self.upstream.router(
            owner,
            "BindSessions",
            cluster_pb2.BindRequest(bindings=bindings, gateway_id=self.gateway_id),
        )
        return list(reply.results)

    async def unbind(self, session: Session) -> None:
        """Forget a session at the router it is bound to (best effort)."""
        router = self.bound_at.pop(session.identity, None)
        if router is None:
            return
        ref = cluster_pb2.SessionRef(
            user_id=session.user_id, gateway_id=self.gateway_id, session_id=session.identity
        )
        with contextlib.suppress(RpcError):
            await self.upstream.router(
                router, "UnbindSessions", cluster_pb2.UnbindRequest(sessions=[ref])
            )

    async def _run(self) -> None:
        while True:
            woken = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timing.REBIND_SNAPSHOT_INTERVAL_S):
                    woken = await self._wake.wait()
            self._wake.clear()
            try:
                done = await (self.reconcile() if woken else self.snapshot())
                if not done:
                    await asyncio.sleep(timing.REBIND_RETRY_S)  # back off before retrying
                    self._wake.set()
            except Exception:
                log.exception("rebinding failed")

    async def snapshot(self) -> bool:
        """Send every router the full list of this gateway's sessions it owns.

        A router replaces what it holds for this gateway with the list, so anything it lost
        (it thought this gateway dead for a moment) or kept too long (a lost unbind) is healed.
        """
        ring = self.upstream.ring()
        if not ring:
            return True
        groups: dict[str, list[Session]] = {r: [] for r in ring.members}
        for session in self.sessions:
            groups[ring.owner(session.user_id)].append(session)
        results = await asyncio.gather(
            *(self._send(owner, group, full=True) for owner, group in groups.items())
        )
        stats.REBIND_SNAPSHOTS.inc()
        return all(results)

    async def reconcile(self) -> bool:
        """Bind every session not bound at its owner; True when all are where they belong."""
        ring = self.upstream.ring()
        if not ring:
            return True
        live = {s.identity for s in self.sessions}
        for identity in [i for i in self.bound_at if i not in live]:
            del self.bound_at[identity]
        self._late &= live
        for router in [r for r in self._binds if r not in ring.members]:
            del self._binds[router]  # a call still out there finishes on its own
        todo: dict[str, list[Session]] = {}
        for session in self.sessions:
            owner = ring.owner(session.user_id)
            if self.bound_at.get(session.identity) != owner:
                todo.setdefault(owner, []).append(session)
        if not todo:
            return True
        results = await asyncio.gather(
            *(self._send(owner, group, full=False) for owner, group in todo.items())
        )
        return all(results)

    async def _send(self, owner: str, chunk: list[Session], full: bool) -> bool:
        request = cluster_pb2.BindRequest(
            bindings=[self.binding(s, fresh=not full and s.identity in self._late) for s in chunk],
            gateway_id=self.gateway_id,
            full_snapshot=full,
        )
        try:
            reply = await self.upstream.router(owner, "BindSessions", request)
        except RpcError as err:
            log.warning("rebinding %d sessions at %s failed: %s", len(chunk), owner, err)
            return False
        moved: list[bytes] = []
        complete = True
        for session, code in zip(chunk, reply.results, strict=False):
            if code != pb.OK:
                complete = False
                continue
            previous = self.bound_at.get(session.identity)
            if previous != owner and (previous is not None or session.identity in self._late):
                moved.append(session.identity)  # (a snapshot re-sends the unmoved)
            self._late.discard(session.identity)
            self.bound_at[session.identity] = owner
        if moved:
            self.sync_hint(moved)
        return complete and len(reply.results) == len(chunk)
