"""Directory rpcs of accounts: Register, Login, VerifyToken(s), Users, Touch, SetDisabled,
SearchUsers.

Role: validate, throttle, hash and check passwords (scrypt threads), read and write accounts
(database threads), issue and verify tokens. Handlers are coroutines; nothing here blocks the
event loop. Peer sockets: none of its own (served on the node's RPC ROUTER).
"""

from __future__ import annotations

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.directory import account_rows, passwords, validation
from nodes.directory.context import Context
from nodes.directory.tokens import Token, now_ms
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb

MAX_TOKENS = 500
"""Most tokens in one VerifyTokens call."""


class Accounts:
    """The account handlers over one `Context`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def register(self, req: cluster_pb2.DirRegisterRequest,
                       call: Call) -> cluster_pb2.DirAuthReply:
        """A new account, logged in. INVALID_ACCOUNT/PASSWORD/NAME, ALREADY_EXISTS, RATE_LIMITED."""
        account = validation.account(req.account)
        password = validation.password(req.password)
        nickname = validation.name(req.nickname, "nickname") if req.nickname else account
        ctx = self.ctx
        await ctx.db(self._may_register, account, req.client_addr)
        pw_hash = await ctx.kdf(passwords.hash_password, password, ctx.options.scrypt_n)
        user = await ctx.db(account_rows.create, ctx.store, ctx.ids, account, nickname, pw_hash,
                            now_ms())
        return self._authorised(user)

    def _may_register(self, account: str, addr: str) -> None:
        """RATE_LIMITED or ALREADY_EXISTS before the costly hash (the insert still decides)."""
        ctx = self.ctx
        if not ctx.throttle.register_allowed(addr, ctx.options.register_per_min):
            raise RpcError(pb.RATE_LIMITED, "too many new accounts from this address")
        if account_rows.credentials(ctx.store, account) is not None:
            raise RpcError(pb.ALREADY_EXISTS, f"account {account!r} is taken")

    async def login(self, req: cluster_pb2.DirLoginRequest,
                    call: Call) -> cluster_pb2.DirAuthReply:
        """Account and password to a token. BAD_CREDENTIALS, LOCKED_OUT, ACCOUNT_DISABLED.

        Every failure counts against the account and the client address; an unknown account
        costs the same scrypt time as a known one.
        """
        if (not validation.ACCOUNT_RE.fullmatch(req.account)
                or not validation.PASSWORD_MIN <= len(req.password) <= validation.PASSWORD_MAX):
            raise RpcError(pb.BAD_CREDENTIALS, "wrong account or password")
        ctx = self.ctx
        found = await ctx.db(self._lookup, req.account, req.client_addr)
        if found is None:
            await ctx.kdf(passwords.burn, req.password, ctx.options.scrypt_n)
            good = False
        else:
            good = await ctx.kdf(passwords.check_password, req.password, found[1])
        if not good or found is None:
            await ctx.db(ctx.throttle.failed, req.account, req.client_addr)
            raise RpcError(pb.BAD_CREDENTIALS, "wrong account or password")
        await ctx.db(ctx.throttle.succeeded, req.account)
        user = found[0]
        if user.disabled:
            raise RpcError(pb.ACCOUNT_DISABLED, "this account is disabled")
        return self._authorised(user)

    def _lookup(self, account: str, addr: str) -> tuple[cluster_pb2.UserRecord, str] | None:
        """(user, password hash) of `account` (None if unknown); LOCKED_OUT when throttled."""
        ctx = self.ctx
        if ctx.throttle.locked(account, addr):
            raise RpcError(pb.LOCKED_OUT, "too many failed logins; try again in a minute")
        creds = account_rows.credentials(ctx.store, account)
        if creds is None:
            return None
        user = account_rows.users(ctx.store, [creds.user_id]).get(creds.user_id)
        return None if user is None else (user, creds.pw_hash)

    async def verify_token(self, req: cluster_pb2.DirTokenRequest,
                           call: Call) -> cluster_pb2.DirAuthReply:
        """A valid token to its user and a fresh token. TOKEN_INVALID, ACCOUNT_DISABLED."""
        result = (await self._verify([req.token])).results[0]
        if result.code != pb.OK:
            raise RpcError(result.code, result.detail)
        return result.auth

    async def verify_tokens(self, req: cluster_pb2.DirTokensRequest,
                            call: Call) -> cluster_pb2.DirTokensReply:
        """VerifyToken of many tokens, one result each, with one read of their users."""
        if len(req.tokens) > MAX_TOKENS:
            raise RpcError(pb.INVALID_ARGUMENT, f"at most {MAX_TOKENS} tokens per call")
        return await self._verify([t.token for t in req.tokens])

    async def _verify(self, tokens: list[str]) -> cluster_pb2.DirTokensReply:
        """Check signatures and expiry here, then read every signed user from the database (so a
        disabled account is refused at once) and issue each a fresh token."""
        checked: list[Token | RpcError] = []
        for token in tokens:
            try:
                checked.append(self.ctx.signer.verify(token))
            except RpcError as err:
                checked.append(err)
        user_ids = [c.user_id for c in checked if isinstance(c, Token)]
        found = (await self.ctx.db(account_rows.users, self.ctx.store, user_ids)
                 if user_ids else {})
        reply = cluster_pb2.DirTokensReply()
        for outcome in checked:
            result = reply.results.add()
            if isinstance(outcome, RpcError):
                result.code, result.detail = outcome.code, outcome.detail
                continue
            user = found.get(outcome.user_id)
            if user is None:
                result.code, result.detail = pb.TOKEN_INVALID, "no such user"
            elif user.disabled:
                result.code, result.detail = pb.ACCOUNT_DISABLED, "this account is disabled"
            else:
                result.auth.user.CopyFrom(user)
                result.auth.token, result.auth.token_expires_ms = \
                    self.ctx.signer.issue(user.user_id)
        return reply

    def _authorised(self, user: cluster_pb2.UserRecord) -> cluster_pb2.DirAuthReply:
        token, expires_ms = self.ctx.signer.issue(user.user_id)
        return cluster_pb2.DirAuthReply(user=user, token=token, token_expires_ms=expires_ms)

    async def users(self, req: cluster_pb2.UserIds, call: Call) -> cluster_pb2.DirUsersReply:
        """The known users among the ids, in request order, with last-active times."""
        found = await self.ctx.db(self.records, list(req.user_ids))
        return cluster_pb2.DirUsersReply(
            users=[found[u] for u in dict.fromkeys(req.user_ids) if u in found])

    def records(self, user_ids: list[int]) -> dict[int, cluster_pb2.UserRecord]:
        """User records with last_active_ms filled in (blocking: a database thread)."""
        found = account_rows.users(self.ctx.store, user_ids)
        for user_id, ms in account_rows.last_active(self.ctx.store, found).items():
            found[user_id].last_active_ms = ms
        return found

    async def touch(self, req: cluster_pb2.TouchRequest, call: Call) -> cluster_pb2.TouchReply:
        """Record last-active times; a later time than the stored one wins."""
        latest: dict[int, int] = {}
        for seen in req.seen:
            if seen.user_id and seen.ts_ms > latest.get(seen.user_id, 0):
                latest[seen.user_id] = seen.ts_ms
        await self.ctx.db(account_rows.touch, self.ctx.store, latest)
        return cluster_pb2.TouchReply()

    async def set_disabled(self, req: cluster_pb2.DirDisableRequest,
                           call: Call) -> cluster_pb2.UserRecord:
        """Block or unblock an account (operators); its record after the change. NOT_FOUND.

        Login and VerifyToken(s) read the flag from the database, so it holds at once everywhere;
        the CacheInvalidation tells gateways the record changed.
        """
        user = await self.ctx.db(account_rows.set_disabled, self.ctx.store, req.user_id,
                                 req.disabled)
        if user is None:
            raise RpcError(pb.NOT_FOUND, f"no user {req.user_id}")
        await self.ctx.announce(cluster_pb2.CacheInvalidation(
            items=[cluster_pb2.Invalidation(user_id=req.user_id)]))
        return user

    async def search_users(self, req: client_pb2.SearchUsersRequest,
                           call: Call) -> client_pb2.SearchUsersReply:
        """At most 20 users whose account starts with the prefix, by account."""
        prefix = validation.account_prefix(req.prefix)
        store = self.ctx.store
        hits = await self.ctx.db(account_rows.search, store, prefix)
        found = await self.ctx.db(account_rows.users, store, [u for _, u in hits])
        return client_pb2.SearchUsersReply(users=[
            client_pb2.UserSummary(user_id=u, account=a, nickname=found[u].nickname)
            for a, u in hits if u in found])
