"""Directory rpcs that end sessions: RevokeToken, CheckTokens, SetDisabled, EndSessions,
SetPassword, Unlock.

Role: revoke tokens in the shared `token` table (so every directory refuses them at once) and
tell every gateway to end the user's live sessions (SessionsEnd on the events PUB, topic
"end"). Logout revokes one token; disabling an account, kicking it or changing its password
revokes them all and ends its sessions everywhere. CheckTokens is the gateways' periodic audit,
the backstop for a SessionsEnd a gateway missed. Peer sockets: none of its own (served on the
node's RPC ROUTER; publishes through `Context`).
"""

from __future__ import annotations

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.directory import account_rows, passwords, token_rows, validation
from nodes.directory.context import Context
from nodes.directory.tokens import Expired, Token
from schema import cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import MAX_TOKENS_PER_CALL

KICKED = "ended by an operator"
DISABLED = "this account was disabled"
NEW_PASSWORD = "the account's password was changed"


class Revocation:
    """The session-ending handlers over one `Context`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def revoke_token(
        self, req: cluster_pb2.DirTokenRequest, call: Call
    ) -> cluster_pb2.DirRevokeReply:
        """Logout: the token stops working everywhere, and so does its successor if it was
        resumed (a resume whose reply was lost); anything not a live token is OK too."""
        try:
            token = self.ctx.signer.verify(req.token)
        except Expired as err:
            token = err.token
        except RpcError:
            return cluster_pb2.DirRevokeReply()
        await self.ctx.db(token_rows.revoke, self.ctx.store, (token.user_id, token.nonce))
        return cluster_pb2.DirRevokeReply()

    async def check_tokens(
        self, req: cluster_pb2.DirTokensRequest, call: Call
    ) -> cluster_pb2.DirTokensReply:
        """Whether each live session's token still holds: OK, TOKEN_INVALID (revoked or forged)
        or ACCOUNT_DISABLED. Nothing is issued; an expired token with its row is OK."""
        if len(req.tokens) > MAX_TOKENS_PER_CALL:
            raise RpcError(pb.INVALID_ARGUMENT, f"at most {MAX_TOKENS_PER_CALL} tokens per call")
        checked: list[Token | None] = []
        for t in req.tokens:
            try:
                checked.append(self.ctx.signer.verify(t.token))
            except Expired as err:
                checked.append(err.token)
            except RpcError:
                checked.append(None)
        keys = [(c.user_id, c.nonce) for c in checked if c is not None]
        live, found = await self.ctx.db(self._lookup, keys)
        reply = cluster_pb2.DirTokensReply()
        for c in checked:
            result = reply.results.add()
            if c is None or (c.user_id, c.nonce) not in live:
                result.code, result.detail = pb.TOKEN_INVALID, "revoked"
            elif found[c.user_id].disabled:
                result.code, result.detail = pb.ACCOUNT_DISABLED, DISABLED
        return reply

    def _lookup(
        self, keys: list[tuple[int, int]]
    ) -> tuple[set[tuple[int, int]], dict[int, cluster_pb2.UserRecord]]:
        if not keys:
            return set(), {}
        store = self.ctx.store
        found = account_rows.users(store, [u for u, _ in keys])
        return {k for k in token_rows.live(store, keys) if k[0] in found}, found

    async def set_disabled(
        self, req: cluster_pb2.DirDisableRequest, call: Call
    ) -> cluster_pb2.UserRecord:
        """Block or unblock an account (operators); its record after the change. NOT_FOUND.

        Blocking revokes every token of the account and ends its live sessions on every
        gateway; Login and VerifyToken(s) read the flag from the database, so it holds at once
        everywhere; the CacheInvalidation tells gateways the record changed.
        """
        user = await self.ctx.db(self._set_disabled, req.user_id, req.disabled)
        await self.ctx.announce(
            cluster_pb2.CacheInvalidation(items=[cluster_pb2.Invalidation(user_id=req.user_id)])
        )
        if req.disabled:
            self.ctx.end_sessions([req.user_id], DISABLED)
        return user

    def _set_disabled(self, user_id: int, disabled: bool) -> cluster_pb2.UserRecord:
        user = account_rows.set_disabled(self.ctx.store, user_id, disabled)
        if user is None:
            raise RpcError(pb.NOT_FOUND, f"no user {user_id}")
        if disabled:
            token_rows.revoke_all(self.ctx.store, user_id)
        return user

    async def end_sessions(
        self, req: cluster_pb2.DirEndSessionsRequest, call: Call
    ) -> cluster_pb2.UserRecord:
        """Kick: revoke every token of the user and end its sessions everywhere. NOT_FOUND."""
        reason = req.reason[: validation.NAME_MAX] if req.reason.isprintable() else ""
        user = await self.ctx.db(self._revoke_all, req.user_id)
        self.ctx.end_sessions([req.user_id], reason or KICKED)
        return user

    def _revoke_all(self, user_id: int) -> cluster_pb2.UserRecord:
        user = account_rows.users(self.ctx.store, [user_id]).get(user_id)
        if user is None:
            raise RpcError(pb.NOT_FOUND, f"no user {user_id}")
        token_rows.revoke_all(self.ctx.store, user_id)
        return user

    async def set_password(
        self, req: cluster_pb2.DirPasswordRequest, call: Call
    ) -> cluster_pb2.UserRecord:
        """A new password (operators): every token revoked, every session ended. NOT_FOUND,
        INVALID_PASSWORD."""
        password = validation.password(req.password)
        ctx = self.ctx
        if not await ctx.db(account_rows.users, ctx.store, [req.user_id]):
            raise RpcError(pb.NOT_FOUND, f"no user {req.user_id}")
        return await self.replace_password(req.user_id, password, "")

    async def replace_password(
        self, user_id: int, password: str, addr: str, keep: cluster_pb2.SessionRef | None = None
    ) -> cluster_pb2.UserRecord:
        """Store a new (valid) password: every token revoked, every session but `keep` ended.
        `addr` is the client address the hash is counted against ("" for operators)."""
        ctx = self.ctx
        pw_hash = await ctx.kdf(addr, passwords.hash_password, password, ctx.options.scrypt_n)
        user = await ctx.db(self._new_password, user_id, pw_hash)
        ctx.end_sessions([user_id], NEW_PASSWORD, keep)
        return user

    def _new_password(self, user_id: int, pw_hash: str) -> cluster_pb2.UserRecord:
        user = account_rows.set_password(self.ctx.store, user_id, pw_hash)
        if user is None:
            raise RpcError(pb.NOT_FOUND, f"no user {user_id}")
        token_rows.revoke_all(self.ctx.store, user_id)
        return user

    async def unlock(self, req: cluster_pb2.UserRef, call: Call) -> cluster_pb2.UserRecord:
        """Lift the account-wide login lock of a user (operators). NOT_FOUND."""
        found = await self.ctx.db(account_rows.users, self.ctx.store, [req.user_id])
        if req.user_id not in found:
            raise RpcError(pb.NOT_FOUND, f"no user {req.user_id}")
        await self.ctx.db(self.ctx.throttle.unlock, found[req.user_id].account)
        return found[req.user_id]
