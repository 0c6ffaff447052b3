"""Ending revoked sessions on a gateway: the SessionsEnd events of directories, and an audit.

Role: when a directory disables, kicks or sets a new password for a user it publishes
SessionsEnd (topic "end"); this gateway then ends every session of those users it holds, but
the one the event says to keep (the session that changed the password): a NOTICE_SESSION_ENDED
push saying why, the session removed and unbound, the connection dropped
(`GatewayNode.end_session`). PUB/SUB is best effort, so every SOIM_TOKEN_AUDIT_S (5 s) the
gateway also asks a directory (CheckTokens, at most 500 tokens a call) whether its sessions'
tokens still hold and ends those that do not: a session whose event was lost acts at most that
long. Peer sockets: none of its own — the node's events SUB (topic "end" of every directory)
and the directory DEALERs of `Upstream`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fabric import envelope
from fabric.methods import RpcError
from nodes.gateway.sessions import Session, SessionTable
from nodes.gateway.upstream import Upstream
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import END_METHOD, MAX_TOKENS_PER_CALL

log = logging.getLogger(__name__)

EndSession = Callable[[bytes, client_pb2.Notice], None]
"""`GatewayNode.end_session(identity, notice)`."""


class SessionEnder:
    """Ends the sessions of revoked users and tokens on one gateway."""

    def __init__(
        self, sessions: SessionTable, upstream: Upstream, end_session: EndSession, node_id: str = ""
    ) -> None:
        self.node_id = node_id
        """This gateway's id: a SessionsEnd may name one of its sessions to keep."""
        self.sessions = sessions
        self.upstream = upstream
        self._end_session = end_session

    def on_event(self, topic: bytes, env: envelope.Envelope) -> None:
        """A directory's SessionsEnd: end every session of those users held here."""
        if env.header.method != END_METHOD:
            return
        try:
            ended = envelope.parse_payload(cluster_pb2.SessionsEnd, env.payload)
        except envelope.EnvelopeError:
            log.warning("bad SessionsEnd from %s", env.header.sender)
            return
        keep = (ended.keep.gateway_id, ended.keep.session_id) if ended.HasField("keep") else None
        for user_id in ended.user_ids:
            for session in self.sessions.of_user(user_id):
                if keep != (self.node_id, session.identity):
                    self.end(session, ended.reason)

    def end(self, session: Session, reason: str) -> None:
        """End one session with a NOTICE_SESSION_ENDED that says why."""
        log.info("ending session of user %d: %s", session.user_id, reason)
        self._end_session(
            session.identity,
            client_pb2.Notice(
                kind=client_pb2.NOTICE_SESSION_ENDED, text=f"session ended: {reason}"
            ),
        )

    async def audit_forever(self, interval_s: float) -> None:
        """Run `audit()` every `interval_s` (SOIM_TOKEN_AUDIT_S) until cancelled."""
        while True:
            await asyncio.sleep(interval_s)  # the audit period
            try:
                await self.audit()
            except RpcError as err:  # no directory now: the next round tries again
                log.info("session audit skipped: %s", err)

    async def audit(self) -> None:
        """Ask a directory about every session's token; end the sessions refused."""
        held = [s for s in self.sessions if s.token]
        for start in range(0, len(held), MAX_TOKENS_PER_CALL):
            batch = [(s, s.token) for s in held[start : start + MAX_TOKENS_PER_CALL]]
            reply = await self.upstream.directory(
                "CheckTokens",
                cluster_pb2.DirTokensRequest(
                    tokens=[cluster_pb2.DirTokenRequest(token=token) for _, token in batch]
                ),
            )
            for (session, token), result in zip(batch, reply.results, strict=False):
                current = self.sessions.get(session.identity)
                if result.code != pb.OK and current is session and session.token == token:
                    self.end(session, result.detail or "token revoked")
