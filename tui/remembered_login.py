"""A remembered login: resume it at start, keep its token current, forget it at logout.

Role: tie one `ClientSession` to the user's `TokenStore` for one cluster (named by the
fingerprint of the pinned gateway key). `resume` picks the account (the one asked for, else the
cluster's last used one) and resumes its session with the stored token, no password; every new
token of the session (a resume rotates it, a login or register starts one) is stored by
`on_token`, and an ended session (logout, a token the cluster refused) is forgotten — all only
while this client holds the account's claim (`TokenStore.claim`): the remembered login of an
account another running `soim` uses is neither resumed (that would spend its token and end its
session) nor overwritten. `logout`
(soim --logout) resumes the remembered session only to end it on the server, so the old token
stops working everywhere, and forgets it here.
Peer sockets: those of the session.
"""

from __future__ import annotations

from collections.abc import Callable

from fabric.methods import RpcError
from schema import client_pb2
from tui.link import LINK_DOWN
from tui.session import ClientSession
from tui.token_store import TokenStore, TokenStoreError


class RememberedLogin:
    """The stored session of one cluster, as the client uses it."""

    def __init__(self, store: TokenStore, cluster: str, say: Callable[[str], None]) -> None:
        self.store = store
        self.cluster = cluster
        self.say = say
        self._broken = False
        self._told: set[str] = set()  # accounts whose "in use elsewhere" was said

    def on_token(self, account: str, token: str) -> None:
        """The session's callback: remember `token` ("" forgets the account)."""
        try:
            if not self.store.claim(self.cluster, account):
                if token and account not in self._told:
                    self._told.add(account)
                    self.say(
                        f"another soim uses the remembered login of {account}; this "
                        "session is not remembered"
                    )
                return
            self.store.release_others(self.cluster, account)
            self.store.save(self.cluster, account, token)
        except TokenStoreError as err:
            if not self._broken:  # say it once, not at every rotation
                self.say(f"the login is not remembered: {err}")
            self._broken = True

    async def resume(
        self, session: ClientSession, account: str = ""
    ) -> client_pb2.LoginReply | None:
        """Resume the remembered session of `account` (else of the last used account); None
        when there is none, another running soim holds it, or the cluster refused it (then it
        is forgotten)."""
        try:
            found = self.store.lookup(self.cluster, account)
            if found is not None and not self.store.claim(self.cluster, found[0]):
                if account:  # asked for by name (else: the last used one is busy, no more)
                    self.say(
                        f"another soim uses the remembered login of {account}; log in "
                        "to open a session of your own here"
                    )
                return None
        except TokenStoreError as err:
            self.say(str(err))
            return None
        if found is None:
            return None
        account, token = found
        try:
            return await session.resume(token)
        except RpcError as err:
            if err.code in LINK_DOWN:
                self.say(
                    f"could not resume the login of {account} ({err.detail or 'no answer'});"
                    " it is kept for the next start"
                )
            else:
                self.say(f"the remembered login of {account} no longer works; log in again")
                self.on_token(account, "")
            return None

    async def logout(self, session: ClientSession, account: str = "") -> str:
        """End the remembered session on the server and forget it; what happened, one line."""
        try:
            found = self.store.lookup(self.cluster, account)
            if found is not None and not self.store.claim(self.cluster, found[0]):
                return (
                    f"the remembered login of {found[0]} is in use by a running soim; /logout there"
                )
        except TokenStoreError as err:
            return str(err)
        reply = await self.resume(session, account)
        if reply is None:
            return "no remembered login to end" + (f" for {account}" if account else "")
        await session.logout()  # the session's on_token forgets it here
        return f"logged out {reply.account}; the remembered login is revoked and forgotten"
