"""The client session: everything a so-im client says to the cluster, with no rendering.

Role: one method per command of the so-im set (login, send, users, friends, group …, search,
add, me) plus register, history, sync and receipts; sends go through a `tui.outbox.Outbox`:
retried with the same client_msg_id until acked (the store keeps one copy), resent in order after
every reconnect, whatever the error was; a send before login is asked once (the gateway's
refusal is the answer, never retried); incoming messages come out of `events`
once each, in seq order per conversation, with gaps filled from history; a sync runs at login,
after every reconnect and on a `SyncHint`. It talks only to gateways holding `server_key`, the
pinned gateway key (see `tui.link`); a redirect elsewhere is reported as a notice and not
followed. The TUI and soimctl build on it.
Peer sockets: those of its `Link` (one DEALER to a gateway's client ROUTER).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq.asyncio
from google.protobuf.message import Message

from fabric import timing
from fabric.methods import RpcError
from fabric.retry import CALL, ONCE, RESEND, RESYNC, Policy
from schema import client_pb2
from schema import common_pb2 as pb
from schema.contracts.client import CLIENT
from tui.conversations import ConversationTracker
from tui.link import LINK_DOWN, Link, LinkState, Locator
from tui.outbox import Outbox

SEND_ATTEMPT_S = 5.0
PING_CHECK_S = 1.0
"""How long a failed send waits for the gateway's Ping before it reconnects."""


class EventKind(enum.Enum):
    """What happened, as seen by the client."""

    MESSAGE = "message"  # a chat message, in order, once
    PUSH = "push"  # any other push: notice, receipt, presence, sync hint
    DISCONNECTED = "disconnected"  # the link died; reconnecting
    RECONNECTED = "reconnected"  # resumed on a gateway; a sync follows
    REDIRECTED = "redirected"  # moved to a less loaded gateway at login


@dataclass(frozen=True)
class ClientEvent:
    """One item of `ClientSession.events`."""

    kind: EventKind
    push: client_pb2.Push | None = None
    message: client_pb2.ChatMessage | None = None
    endpoint: str = ""


class ClientSession:
    """One user's connection to the cluster. `await connect()`, then register or log in."""

    def __init__(
        self,
        endpoint: str,
        server_key: bytes,
        *,
        device: str = "soim",
        timeout: float = timing.CLIENT_REQUEST_TIMEOUT_S,
        ctx: zmq.asyncio.Context | None = None,
        locator: Locator | None = None,
        start_at: str = "all",
        auto_delivered: bool = True,
        on_token: Callable[[str, str], None] | None = None,
    ) -> None:
        """`on_token(account, token)` is called with every new token of the session (each
        login, register and resume: a resume rotates it) and with "" once it ends (logout, or
        a token the cluster no longer accepts)."""
        self._own_ctx = ctx is None
        self.ctx = ctx if ctx is not None else zmq.asyncio.Context()
        self.device = device
        self.events: asyncio.Queue[ClientEvent] = asyncio.Queue()
        self.link = Link(
            endpoint,
            server_key,
            device=device,
            timeout=timeout,
            ctx=self.ctx,
            locator=locator,
            on_push=self._on_push,
            on_state=self._on_state,
            on_token=on_token,
        )
        self.outbox = Outbox(self._attempt_send, self._heal, RESEND)
        self.tracker = ConversationTracker(self._history_page, self._emit, start_at)
        self.auto_delivered = auto_delivered
        self._inbox: asyncio.Queue[client_pb2.Push | asyncio.Future[None] | None] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._fill_retry: Policy = ONCE  # History pages: CALL only in catch_up (_sync_for)
        self._resync: asyncio.Task[None] | None = None
        self._sync_failures = 0
        self._own_seq: dict[int, int] = {}  # conv_id -> seq of my newest acked message there

    @property
    def user(self) -> client_pb2.LoginReply | None:
        """Who I am logged in as (user_id, account, nickname, token), or None before login and
        after the session ended."""
        return self.link.user

    @property
    def token(self) -> str:
        """The session's current token ("" when not logged in); a resume rotates it."""
        return self.link.token

    @property
    def endpoint(self) -> str:
        """The gateway this session talks to now (it changes on a redirect or failover)."""
        return self.link.endpoint

    # ---- connection
    async def connect(self) -> None:
        """Open the link (no round trip yet)."""
        self.link.open()
        if self._dispatcher is None:
            self._dispatcher = asyncio.ensure_future(self._dispatch())

    async def close(self, logout: bool = True) -> None:
        """Close everything; log out first if logged in and `logout` (else the token stays
        valid, to be resumed by the next start)."""
        self.outbox.close()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await self.link.close(logout)
        if self._own_ctx:
            self.ctx.destroy(linger=0)

    async def call(self, name: str, request: Message, timeout: float | None = None) -> Any:
        """Send client.<name>; return the reply or raise RpcError with the gateway's code."""
        return await self.link.call(name, request, timeout)

    async def reconnect(self) -> None:
        """Re-open the link with backoff and resume the session by token."""
        await self.link.recover()

    # ---- session
    async def register(
        self, account: str, password: str, nickname: str = ""
    ) -> client_pb2.LoginReply:
        """Create an account and log in to it (ALREADY_EXISTS, INVALID_ACCOUNT, INVALID_PASSWORD,
        INVALID_NAME); a redirect to a less loaded gateway is followed."""
        return await self._authenticated(
            "Register",
            client_pb2.RegisterRequest(
                account=account, password=password, device=self.device, nickname=nickname
            ),
        )

    async def login(self, account: str, password: str) -> client_pb2.LoginReply:
        """Log in (BAD_CREDENTIALS, LOCKED_OUT, ACCOUNT_DISABLED, RATE_LIMITED); a redirect to a
        less loaded gateway is followed. Pushes start now, and a sync follows."""
        return await self._authenticated(
            "Login", client_pb2.LoginRequest(account=account, password=password, device=self.device)
        )

    async def resume(self, token: str) -> client_pb2.LoginReply:
        """Take up a session by a token from an earlier login (TOKEN_INVALID when revoked or
        expired: log in again); the reply carries the new token."""
        return await self._authenticated(
            "Resume", client_pb2.ResumeRequest(token=token, device=self.device)
        )

    async def logout(self) -> None:
        """End the session on the server: its token stops working everywhere, and unsent
        messages fail with UNAUTHENTICATED."""
        await self.call("Logout", client_pb2.LogoutRequest())
        self.link.forget()
        self.outbox.fail_all(RpcError(pb.UNAUTHENTICATED, "logged out"))

    async def change_password(self, old: str, new: str) -> client_pb2.ChangePasswordReply:
        """A new password: my other sessions end; this one resumes with the new token."""
        reply: client_pb2.ChangePasswordReply = await self.call(
            "ChangePassword", client_pb2.ChangePasswordRequest(old_password=old, new_password=new)
        )
        self.link.renewed(reply.token, reply.token_expires_ms)
        return reply

    async def delete_account(self, password: str) -> None:
        """Delete my account (the gateway then ends this session too)."""
        await self.call("DeleteAccount", client_pb2.DeleteAccountRequest(password=password))
        self.link.forget()
        self.outbox.fail_all(RpcError(pb.UNAUTHENTICATED, "account deleted"))

    async def ping(self) -> client_pb2.PingReply:
        """One round trip to the gateway (allowed before login too)."""
        return await self.call(
            "Ping", client_pb2.PingRequest(client_time_ms=int(time.time() * 1000))
        )

    async def _authenticated(self, name: str, request: Message) -> client_pb2.LoginReply:
        reply = await self.link.authenticate(name, request)
        self._inbox.put_nowait(None)  # a sync
        return reply

    # ---- messages
    async def send(
        self,
        body: str,
        *,
        to_user: int = 0,
        to_group: int = 0,
        client_msg_id: str = "",
        kind: client_pb2.MessageKind.ValueType = client_pb2.MESSAGE_KIND_TEXT,
        ref_seq: int = 0,
        mentions: Sequence[int] = (),
        deadline_s: float | None = None,
    ) -> client_pb2.SendAck:
        """Send until acked, across reconnects, with one client_msg_id (see `tui.outbox`).
        Before login the gateway's refusal is the answer: asked once, never retried. `kind`
        and `ref_seq` make it an edit or recall of my message ref_seq, or a reply to it. With
        `deadline_s` the caller stops waiting then (TIMEOUT); the message is still resent."""
        request = client_pb2.SendRequest(
            client_msg_id=client_msg_id or uuid.uuid4().hex,
            body=body,
            kind=kind,
            ref_seq=ref_seq,
            mentions=mentions,
        )
        if to_group:
            request.to_group = to_group
        else:
            request.to_user = to_user
        if not self.link.token:
            return await self.link.call("Send", request, retry=ONCE)
        try:
            async with asyncio.timeout(deadline_s):
                ack = await self.outbox.send(request)
        except TimeoutError:
            raise RpcError(
                pb.TIMEOUT, f"not acknowledged in {deadline_s:g} s; still being resent"
            ) from None
        self._own_message(request, ack)
        return ack

    def _own_message(self, request: client_pb2.SendRequest, ack: client_pb2.SendAck) -> None:
        """My acked message joins my stream as a push would: the gateway pushes it to my other
        sessions, and this one gets the ack instead. In seq order and once, like any push (a
        gap before it is fetched first; a retried send's seq is already there)."""
        me = self.link.user
        if me is None:
            return
        msg = client_pb2.ChatMessage(
            conv_id=ack.conv_id,
            seq=ack.seq,
            msg_id=ack.msg_id,
            sender=me.user_id,
            sender_account=me.account,
            body=request.body,
            ts_ms=ack.ts_ms,
            client_msg_id=request.client_msg_id,
            kind=request.kind,
            ref_seq=request.ref_seq,
            mentions=request.mentions,
        )
        if request.WhichOneof("to") == "to_group":
            msg.to_group = request.to_group
        else:
            msg.to_user = request.to_user
        self._own_seq[ack.conv_id] = max(ack.seq, self._own_seq.get(ack.conv_id, 0))
        self._inbox.put_nowait(client_pb2.Push(message=msg))

    async def _attempt_send(self, request: client_pb2.SendRequest) -> client_pb2.SendAck:
        """One attempt: the outbox is the one layer that retries a send (`fabric.retry`)."""
        return await self.link.call("Send", request, timeout=SEND_ATTEMPT_S, retry=ONCE)

    async def _heal(self, err: RpcError) -> bool:
        """A send failed with `err`: reconnect and resume if the link is dead or the gateway
        forgot the session (any gateway the link knows will do; False), else the gateway is up
        and `err` was its answer (True); raise if the session ended."""
        healed = err.code == pb.UNAUTHENTICATED or (
            err.code in LINK_DOWN and not await self._gateway_answers()
        )
        if healed:
            await self.link.recover()
        if not self.link.token:
            raise RpcError(pb.UNAUTHENTICATED, "the session ended; log in again")
        return not healed

    async def _gateway_answers(self) -> bool:
        """Does the gateway answer a Ping now? (An UNAVAILABLE may be its answer, not a dead
        link: then the link stays and only the send waits.)"""
        try:
            await self.link.call("Ping", client_pb2.PingRequest(), timeout=PING_CHECK_S, retry=ONCE)
        except RpcError:
            return False
        return True

    async def typing(self, conv_id: int) -> client_pb2.TypingReply:
        """Tell the others in a conversation that I am typing (not retried, not stored)."""
        return await self.call("Typing", client_pb2.TypingRequest(conv_id=conv_id))

    async def sync(self) -> client_pb2.SyncReply:
        """Per-conversation seqs, cursors and unread counts."""
        return await self.call("Sync", client_pb2.SyncRequest())

    async def history(
        self, conv_id: int, *, after_seq: int = 0, before_seq: int = 0, limit: int = 50
    ) -> client_pb2.HistoryReply:
        """Messages of one of my conversations in ascending seq: after `after_seq`, or the newest
        before `before_seq`; with neither, the newest. `limit` 1-100; a page may hold fewer (it
        fits one frame) with `more` set."""
        request = client_pb2.HistoryRequest(conv_id=conv_id, limit=limit)
        if before_seq:
            request.before_seq = before_seq
        else:
            request.after_seq = after_seq
        return await self.call("History", request)

    async def search_messages(
        self, query: str, *, before: client_pb2.ChatMessage | None = None, limit: int = 20
    ) -> client_pb2.SearchMessagesReply:
        """Messages of my conversations holding every word of `query`, newest first; the next
        page starts after `before` (the last message of the previous page)."""
        request = client_pb2.SearchMessagesRequest(query=query, limit=limit)
        if before is not None:
            request.before_ts_ms, request.before_msg_id = before.ts_ms, before.msg_id
        return await self.call("SearchMessages", request)

    async def delivered(self, conv_id: int, seq: int) -> client_pb2.DeliveredReply:
        """Move my delivered cursor to `seq` (the session does this itself for what it puts on
        `events` unless `auto_delivered` is False); cursors only move forward."""
        return await self.call("Delivered", client_pb2.DeliveredRequest(conv_id=conv_id, seq=seq))

    async def read(self, conv_id: int, seq: int) -> client_pb2.ReadReply:
        """Move my read cursor to `seq`: the sender gets a Receipt push; cursors only move
        forward."""
        return await self.call("Read", client_pb2.ReadRequest(conv_id=conv_id, seq=seq))

    async def group_read_counts(
        self, conv_id: int, from_seq: int, to_seq: int
    ) -> client_pb2.GroupReadCountsReply:
        """How many members read and got each group message from_seq..to_seq (at most 100)."""
        return await self.call(
            "GroupReadCounts",
            client_pb2.GroupReadCountsRequest(conv_id=conv_id, from_seq=from_seq, to_seq=to_seq),
        )

    # ---- the so-im command set
    async def me(self) -> client_pb2.MeReply:
        """My account as the cluster knows it."""
        return await self.call("Me", client_pb2.MeRequest())

    async def online_users(
        self, cursor: int = 0, limit: int = 50, everyone: bool = False
    ) -> client_pb2.OnlineUsersReply:
        """Online friends and members of my groups; with `everyone`, every online user."""
        return await self.call(
            "OnlineUsers",
            client_pb2.OnlineUsersRequest(cursor=cursor, limit=limit, everyone=everyone),
        )

    async def friends(self) -> client_pb2.FriendsReply:
        """My friends and pending requests, each with its state and presence."""
        return await self.call("Friends", client_pb2.FriendsRequest())

    async def add_friend(self, user_id: int) -> client_pb2.AddFriendReply:
        """Ask `user_id` to be my friend, or accept their request (then we can chat)."""
        return await self.call("AddFriend", client_pb2.AddFriendRequest(user_id=user_id))

    async def search_users(self, prefix: str) -> client_pb2.SearchUsersReply:
        """Accounts whose name starts with `prefix`."""
        return await self.call("SearchUsers", client_pb2.SearchUsersRequest(prefix=prefix))

    async def groups(self) -> client_pb2.GroupsReply:
        """The groups I am a member of."""
        return await self.call("Groups", client_pb2.GroupsRequest())

    async def group_create(self, name: str, user_limit: int = 0) -> client_pb2.GroupCreateReply:
        """A new public group that I own (ALREADY_EXISTS if the name is taken)."""
        return await self.call(
            "GroupCreate", client_pb2.GroupCreateRequest(name=name, user_limit=user_limit)
        )

    async def group_search(self, prefix: str) -> client_pb2.GroupSearchReply:
        """Groups whose name starts with `prefix` (invite-only ones only if I am a member)."""
        return await self.call("GroupSearch", client_pb2.GroupSearchRequest(prefix=prefix))

    async def group_join(self, group_id: int) -> client_pb2.GroupJoinReply:
        """Join a group (GROUP_FULL, ALREADY_MEMBER, FORBIDDEN if invite-only and not invited)."""
        return await self.call("GroupJoin", client_pb2.GroupJoinRequest(group_id=group_id))

    async def group_leave(self, group_id: int) -> client_pb2.GroupLeaveReply:
        """Leave a group (NOT_MEMBER if I am not in it)."""
        return await self.call("GroupLeave", client_pb2.GroupLeaveRequest(group_id=group_id))

    async def group_users(self, group_id: int) -> client_pb2.GroupUsersReply:
        """The members of a group I belong to, with presence."""
        return await self.call("GroupUsers", client_pb2.GroupUsersRequest(group_id=group_id))

    # ---- incoming
    def _on_push(self, push: client_pb2.Push) -> None:
        self._inbox.put_nowait(push)

    def notify(self, text: str) -> None:
        """Show `text` as a notice from the client itself (the TUI's status line and console,
        a '* ' line in --plain)."""
        self.events.put_nowait(
            ClientEvent(
                EventKind.PUSH,
                push=client_pb2.Push(
                    notice=client_pb2.Notice(kind=client_pb2.NOTICE_TEXT, text=text)
                ),
            )
        )

    def _on_state(self, state: LinkState, endpoint: str) -> None:
        if state is LinkState.REDIRECT_REFUSED:
            self.notify(
                f"not following a redirect: {endpoint}, not the pinned gateway key; staying here"
            )
            return
        if state is LinkState.SESSION_ENDED:
            self.notify(f"the session ended ({endpoint}); log in again")
            self.outbox.fail_all(RpcError(pb.UNAUTHENTICATED, "the session ended"))
            return
        self.events.put_nowait(ClientEvent(EventKind(state.value), endpoint=endpoint))
        if state is not LinkState.DISCONNECTED:
            self._inbox.put_nowait(None)  # a sync
            self.outbox.kick()

    def _emit(self, msg: client_pb2.ChatMessage) -> None:
        self.events.put_nowait(ClientEvent(EventKind.MESSAGE, message=msg))

    async def _history_page(self, conv_id: int, after: int, limit: int) -> client_pb2.HistoryReply:
        request = client_pb2.HistoryRequest(conv_id=conv_id, after_seq=after, limit=limit)
        return await self.link.call("History", request, retry=self._fill_retry)

    async def _dispatch(self) -> None:
        """Handle pushes and syncs one at a time, so messages come out in order."""
        while True:
            item = await self._inbox.get()
            if isinstance(item, asyncio.Future):
                await self._sync_for(item)
                continue
            try:
                if item is None or item.WhichOneof("item") == "sync_hint":
                    if item is not None:
                        self.events.put_nowait(ClientEvent(EventKind.PUSH, push=item))
                    if self.link.user is not None:
                        await self._background_sync()
                elif item.WhichOneof("item") == "message":
                    await self.tracker.on_message(item.message)
                elif (
                    item.WhichOneof("item") == "notice"
                    and item.notice.kind == client_pb2.NOTICE_REDIRECT
                ):
                    self.events.put_nowait(ClientEvent(EventKind.PUSH, push=item))
                    self._later(self.link.move(item.notice.redirect))
                else:
                    self.events.put_nowait(ClientEvent(EventKind.PUSH, push=item))
            except RpcError as err:
                self._sync_failed(err)
            if self._inbox.empty():
                self._acknowledge()

    async def catch_up(self) -> None:
        """Sync now; return once everything the sync fetched has been put on `events`."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(done)
        await done

    async def _sync_for(self, done: asyncio.Future[None]) -> None:
        """catch_up's sync: its caller waits for it, so its calls are retried by the RPC client
        (`CALL`) within their deadlines and a failure is the caller's to handle."""
        self._fill_retry = CALL
        try:
            await self.tracker.sync((await self.sync()).conversations)
        except RpcError as err:
            if not done.done():
                done.set_exception(err)
            return
        finally:
            self._fill_retry = ONCE
        if not done.done():
            done.set_result(None)

    async def _background_sync(self) -> None:
        """A sync nobody waits for: each call asked once, the whole sync started again by
        `RESYNC` when one fails (`_sync_failed`), the one layer retrying it (`fabric.retry`)."""
        reply = await self.link.call("Sync", client_pb2.SyncRequest(), retry=ONCE)
        await self.tracker.sync(reply.conversations)
        self._sync_failures = 0

    def _sync_failed(self, err: RpcError) -> None:
        """A background sync (or a gap's History) failed: sync again after `RESYNC`'s pause,
        once, while logged in and the code is one to try again after."""
        if self.link.user is None or not RESYNC.retries(err.code, CLIENT["Sync"].idempotency):
            return
        if self._resync is None or self._resync.done():
            self._sync_failures += 1
            self._resync = asyncio.ensure_future(
                self._resync_after(RESYNC.pause(self._sync_failures, err.code))
            )
            self._background.add(self._resync)
            self._resync.add_done_callback(self._background.discard)

    async def _resync_after(self, pause_s: float) -> None:
        await asyncio.sleep(pause_s)  # RESYNC's backoff before the next sync
        self._inbox.put_nowait(None)

    def _acknowledge(self) -> None:
        """Tell the gateway what has been delivered here, one Delivered per conversation —
        except where the newest message passed on is my own acked one: the storage node moved
        my cursors to it when it stored it (`Cursors.own`, read and delivered, so everything
        before it too), and a Delivered would be a call, a cursor write and a receipt for
        nothing on every message I send."""
        touched, self.tracker.touched = self.tracker.touched, set()
        if not self.auto_delivered:
            return
        for conv_id in touched:
            last = self.tracker.last[conv_id]
            if last != self._own_seq.get(conv_id):
                self._later(self._delivered_quietly(conv_id, last))

    async def _delivered_quietly(self, conv_id: int, seq: int) -> None:
        with contextlib.suppress(RpcError):
            await self.delivered(conv_id, seq)

    def _later(self, job: Any) -> None:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
