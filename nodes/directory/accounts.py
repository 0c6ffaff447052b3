"""Directory rpcs of accounts: Register, Login, VerifyToken(s), Users, Touch, SearchUsers.

Role: validate, throttle, hash and check passwords (scrypt threads behind the bounded KDF
queue), read and write accounts (database threads), issue tokens (each recorded in the `token`
table) and rotate them on resume: a resumed token stops working on every directory at once.
Handlers are coroutines; nothing here blocks the event loop. Ending sessions and revoking
tokens is nodes.directory.revocation. Peer sockets: none of its own (served on the node's RPC
ROUTER).
"""

from __future__ import annotations

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.directory import account_rows, passwords, token_rows, validation
from nodes.directory.context import Context
from nodes.directory.tokens import Token, new_nonce, now_ms
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import MAX_TOKENS_PER_CALL

"""Most tokens in one VerifyTokens call."""


class Accounts:
    """The account handlers over one `Context`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def register(
        self, req: cluster_pb2.DirRegisterRequest, call: Call
    ) -> cluster_pb2.DirAuthReply:
        """A new account, logged in. INVALID_ACCOUNT/PASSWORD/NAME, ALREADY_EXISTS, RATE_LIMITED."""
        account = validation.account(req.account)
        password = validation.password(req.password)
        nickname = validation.name(req.nickname, "nickname") if req.nickname else account
        ctx = self.ctx
        await ctx.db(self._may_register, account, req.client_addr)
        pw_hash = await ctx.kdf(
            req.client_addr, passwords.hash_password, password, ctx.options.scrypt_n
        )
        user = await ctx.db(
            account_rows.create, ctx.store, ctx.ids, account, nickname, pw_hash, now_ms()
        )
        return await ctx.db(self.authorised, user)

    def _may_register(self, account: str, addr: str) -> None:
        """RATE_LIMITED or ALREADY_EXISTS before the costly hash (the insert still decides)."""
        ctx = self.ctx
        if not ctx.throttle.register_allowed(addr, ctx.options.register_per_min):
            raise RpcError(pb.RATE_LIMITED, "too many new accounts from this address")
        if account_rows.credentials(ctx.store, account) is not None:
            raise RpcError(pb.ALREADY_EXISTS, f"account {account!r} is taken")

    async def login(self, req: cluster_pb2.DirLoginRequest, call: Call) -> cluster_pb2.DirAuthReply:
        """Account and password to a token. BAD_CREDENTIALS, LOCKED_OUT, ACCOUNT_DISABLED.

        Every failure counts against the (account, address) pair, the address and the account
        (nodes.directory.throttle); an unknown account costs the same scrypt time as a known
        one. RATE_LIMITED at once when the KDF queue is full.
        """
        user = await self.checked(req.account, req.password, req.client_addr)
        if user.disabled:
            raise RpcError(pb.ACCOUNT_DISABLED, "this account is disabled")
        return await self.ctx.db(self.authorised, user)

    async def checked(self, account: str, password: str, addr: str) -> cluster_pb2.UserRecord:
        """The user whose account and password these are, throttled as a login (a failure
        counts against the account and the address `addr`). BAD_CREDENTIALS, LOCKED_OUT."""
        if (
            not validation.ACCOUNT_RE.fullmatch(account)
            or not validation.PASSWORD_MIN <= len(password) <= validation.PASSWORD_MAX
        ):
            raise RpcError(pb.BAD_CREDENTIALS, "wrong account or password")
        ctx = self.ctx
        found = await ctx.db(self._lookup, account, addr)
        if found is None:
            await ctx.kdf(addr, passwords.burn, password, ctx.options.scrypt_n)
            good = False
        else:
            good = await ctx.kdf(addr, passwords.check_password, password, found[1])
        if not good or found is None:
            await ctx.db(ctx.throttle.failed, account, addr)
            raise RpcError(pb.BAD_CREDENTIALS, "wrong account or password")
        await ctx.db(ctx.throttle.succeeded, account, addr)
        return found[0]

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

    async def verify_token(
        self, req: cluster_pb2.DirTokenRequest, call: Call
    ) -> cluster_pb2.DirAuthReply:
        """A valid token to its user and a fresh token. TOKEN_INVALID, ACCOUNT_DISABLED."""
        result = (await self._verify([req.token])).results[0]
        if result.code != pb.OK:
            raise RpcError(result.code, result.detail)
        return result.auth

    async def verify_tokens(
        self, req: cluster_pb2.DirTokensRequest, call: Call
    ) -> cluster_pb2.DirTokensReply:
        """VerifyToken of many tokens, one result each, with one read of their users."""
        if len(req.tokens) > MAX_TOKENS_PER_CALL:
            raise RpcError(pb.INVALID_ARGUMENT, f"at most {MAX_TOKENS_PER_CALL} tokens per call")
        return await self._verify([t.token for t in req.tokens])

    async def _verify(self, tokens: list[str]) -> cluster_pb2.DirTokensReply:
        """Check signatures and expiry here, then in one database job read every signed user
        (so a disabled account is refused at once), record a successor for each token of an
        enabled user and claim each token's row for it (a revoked or already resumed token
        has none; one resumed within the reuse grace gets its existing successor again)."""
        checked = [self._signed(token) for token in tokens]
        if not any(isinstance(c, Token) for c in checked):
            return _results(checked, {})
        return await self.ctx.db(self._rotate, checked)

    def _signed(self, token: str) -> Token | RpcError:
        try:
            return self.ctx.signer.verify(token)
        except RpcError as err:
            return err

    def _rotate(self, checked: list[Token | RpcError]) -> cluster_pb2.DirTokensReply:
        """The database half of `_verify` (blocking: a database thread). The successors' rows
        go in before the claims name them, so a claimed row's successor always exists (until
        it is revoked): a repeated resume finds it, whichever directory claimed."""
        store = self.ctx.store
        found = account_rows.users(store, [c.user_id for c in checked if isinstance(c, Token)])
        minted: dict[int, tuple[cluster_pb2.DirAuthReply, tuple[int, int, int]]] = {}
        for i, c in enumerate(checked):
            user = found.get(c.user_id) if isinstance(c, Token) else None
            if user is not None and not user.disabled:
                minted[i] = self._mint(user)
        now = now_ms()
        grace_ms = self.ctx.options.token_reuse_grace_s * 1000
        if minted:
            token_rows.add(store, [row for _, row in minted.values()], now, grace_ms)
        outcomes: dict[int, cluster_pb2.DirTokenResult] = {}
        unused: list[tuple[int, int]] = []
        for i, c in enumerate(checked):
            if not isinstance(c, Token):
                continue
            user, key = found.get(c.user_id), (c.user_id, c.nonce)
            auth, row = minted.get(i, (None, (c.user_id, 0, 0)))
            if user is None:
                outcomes[i] = _refused(pb.TOKEN_INVALID, "not a token")
            elif token_rows.claim(store, key, row[1], now):
                outcomes[i] = (
                    _refused(pb.ACCOUNT_DISABLED, "this account is disabled")
                    if auth is None
                    else cluster_pb2.DirTokenResult(code=pb.OK, auth=auth)
                )
            else:
                if auth is not None:
                    unused.append((row[0], row[1]))
                again = None if auth is None else token_rows.successor(store, key, now, grace_ms)
                outcomes[i] = (
                    _refused(pb.TOKEN_INVALID, "revoked or already used")
                    if again is None
                    else cluster_pb2.DirTokenResult(code=pb.OK, auth=self._mint(user, *again)[0])
                )
        if unused:
            token_rows.drop(store, unused)
        return _results(checked, outcomes)

    def _mint(
        self, user: cluster_pb2.UserRecord, nonce: int | None = None, expires_ms: int | None = None
    ) -> tuple[cluster_pb2.DirAuthReply, tuple[int, int, int]]:
        """A token for `user` (a new one, or the one of the row `nonce`, `expires_ms`) and its
        row (user_id, nonce, expires_ms), for token_rows.add when it is new."""
        nonce = new_nonce() if nonce is None else nonce
        token, expires_ms = self.ctx.signer.issue(user.user_id, expires_ms, nonce)
        auth = cluster_pb2.DirAuthReply(user=user, token=token, token_expires_ms=expires_ms)
        return auth, (user.user_id, nonce, expires_ms)

    def authorised(self, user: cluster_pb2.UserRecord) -> cluster_pb2.DirAuthReply:
        """A new token for `user`, recorded (blocking: a database thread)."""
        auth, row = self._mint(user)
        grace_ms = self.ctx.options.token_reuse_grace_s * 1000
        token_rows.add(self.ctx.store, [row], now_ms(), grace_ms)
        return auth

    async def users(self, req: cluster_pb2.UserIds, call: Call) -> cluster_pb2.DirUsersReply:
        """The known users among the ids, in request order, with last-active times."""
        found = await self.ctx.db(self.records, list(req.user_ids))
        return cluster_pb2.DirUsersReply(
            users=[found[u] for u in dict.fromkeys(req.user_ids) if u in found]
        )

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

    async def search_users(
        self, req: client_pb2.SearchUsersRequest, call: Call
    ) -> client_pb2.SearchUsersReply:
        """At most 20 users whose account starts with the prefix, by account."""
        prefix = validation.account_prefix(req.prefix)
        store = self.ctx.store
        hits = await self.ctx.db(account_rows.search, store, prefix)
        found = await self.ctx.db(account_rows.users, store, [u for _, u in hits])
        return client_pb2.SearchUsersReply(
            users=[
                client_pb2.UserSummary(user_id=u, account=a, nickname=found[u].nickname)
                for a, u in hits
                if u in found
            ]
        )


def _refused(code: pb.ErrorCode.ValueType, detail: str) -> cluster_pb2.DirTokenResult:
    return cluster_pb2.DirTokenResult(code=code, detail=detail)


def _results(
    checked: list[Token | RpcError], outcomes: dict[int, cluster_pb2.DirTokenResult]
) -> cluster_pb2.DirTokensReply:
    """One result per checked token: its outcome, or the error its signature check raised."""
    return cluster_pb2.DirTokensReply(
        results=[
            outcomes[i] if isinstance(c, Token) else _refused(c.code, c.detail)
            for i, c in enumerate(checked)
        ]
    )
