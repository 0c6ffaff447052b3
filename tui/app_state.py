"""What the full-screen client shows, as data: conversations, their messages, and receipts.

Role: the model of `soim`. It keeps one `Entry` per conversation for the sidebar (title, online
dot, unread count from Sync and from arriving messages, the peer's cursors for the marks), one
`Thread` per conversation for the message pane (stored messages by seq, my sends still in
flight, group read counts), the console lines (command output) and the status line. Every
change is applied by a method here; the app draws from it. No sockets, no terminal.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

from schema import client_pb2
from tui import message_view
from tui.commands import Target

CONSOLE_LINES = 500
STATUS_TTL_S = 10.0
"""How long the status line shows what it was told (then it is blank again)."""


@dataclass
class Entry:
    """One conversation in the sidebar."""

    conv_id: int
    target: Target
    title: str
    online: bool = False
    last_seq: int = 0
    read_seq: int = 0
    peer_read_seq: int = 0
    peer_delivered_seq: int = 0
    mention_seq: int = 0  # the newest message that mentions me

    @property
    def unread(self) -> int:
        return max(0, self.last_seq - self.read_seq)

    @property
    def mentioned(self) -> bool:
        """A message I have not read mentions me (unread even when the conversation is muted)."""
        return self.mention_seq > self.read_seq


@dataclass
class Pending:
    """A message I typed that the store has not acknowledged yet (or refused: `error`)."""

    client_msg_id: str
    body: str
    ts_ms: int
    error: str = ""


@dataclass
class Thread:
    """The loaded part of one conversation."""

    messages: dict[int, client_pb2.ChatMessage] = field(default_factory=dict)
    seqs: list[int] = field(default_factory=list)  # the keys of messages, ascending
    pending: list[Pending] = field(default_factory=list)
    members: int = 0  # groups: for read counts
    counts: dict[int, client_pb2.SeqReadCount] = field(default_factory=dict)
    fetched: bool = False  # the newest page was asked for
    loading: bool = False  # an older page is being fetched
    newer_missing: bool = False  # a jump loaded a page mid-way
    unread_from: int = 0  # where "new messages" goes (0: none)
    marked: int = 0  # the seq a search jumped to
    amends: dict[int, client_pb2.ChatMessage] = field(default_factory=dict)  # see message_view

    @property
    def oldest(self) -> int:
        return self.seqs[0] if self.seqs else 0

    @property
    def newest(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def put(self, msg: client_pb2.ChatMessage) -> None:
        """Keep `msg` (a second copy of a seq replaces the first)."""
        if msg.seq not in self.messages:
            bisect.insort(self.seqs, msg.seq)
        self.messages[msg.seq] = msg

    def reset(self, messages: list[client_pb2.ChatMessage]) -> None:
        """Hold only `messages` (a page somewhere in the conversation)."""
        self.messages.clear()
        self.seqs.clear()
        for msg in messages:
            self.put(msg)

    def ordered(self) -> list[client_pb2.ChatMessage]:
        return [self.messages[s] for s in self.seqs]


class Model:
    """Everything on screen, and nothing about how it is drawn."""

    def __init__(self) -> None:
        self.me: client_pb2.LoginReply | None = None
        self.endpoint = ""
        self.connected = True
        self.entries: dict[int, Entry] = {}
        self.threads: dict[int, Thread] = {}
        self.open_conv = 0  # 0: the console
        self.console: list[str] = []
        self.muted: set[int] = set()  # conversations without notifications
        self._status = ""
        self.status_is_error = False
        self.typing: dict[int, dict[str, float]] = {}  # conv -> account -> shown until
        self._status_at = 0.0

    # ---- console and status
    def say(self, text: str, error: bool = False) -> None:
        self._status, self.status_is_error = text, error
        self._status_at = time.monotonic()

    @property
    def status(self) -> str:
        """What the status line shows now: the last thing said, for STATUS_TTL_S."""
        return self._status if self.status_expires_in() > 0 else ""

    def status_expires_in(self) -> float:
        """Seconds until the status line's text expires (<= 0: it has)."""
        return self._status_at + STATUS_TTL_S - time.monotonic() if self._status else 0.0

    def log(self, lines: list[str]) -> None:
        self.console += lines
        del self.console[:-CONSOLE_LINES]

    # ---- the sidebar
    def sidebar(self) -> list[Entry]:
        """Friends, then groups, each by title."""
        return sorted(
            self.entries.values(), key=lambda e: (e.target.group, e.title.lower(), e.conv_id)
        )

    def entry_of(self, target: Target) -> Entry | None:
        return next((e for e in self.entries.values() if e.target == target), None)

    def set_friends(self, friends: list[client_pb2.Friend]) -> None:
        mine = {f.conv_id for f in friends if f.state == client_pb2.FRIEND_STATE_ACCEPTED}
        for conv_id in [c for c, e in self.entries.items() if not e.target.group and c not in mine]:
            del self.entries[conv_id]  # no longer friends
        for f in friends:
            if f.state == client_pb2.FRIEND_STATE_ACCEPTED and f.conv_id:
                entry = self.ensure(f.conv_id, Target(f.user_id), f.nickname or f.account)
                entry.title, entry.online = f.nickname or f.account, f.online

    def set_groups(self, groups: list[client_pb2.GroupInfo]) -> None:
        mine = {g.group_id for g in groups}
        for conv_id in [c for c, e in self.entries.items() if e.target.group and c not in mine]:
            del self.entries[conv_id]  # left the group
        for g in groups:
            self.ensure(g.group_id, Target(g.group_id, group=True), g.name).title = g.name
            self.thread(g.group_id).members = g.members

    def apply_sync(self, conversations: list[client_pb2.Conversation]) -> None:
        for c in conversations:
            group = c.kind == client_pb2.CONV_KIND_GROUP
            title = c.title or str(c.peer_id)
            entry = self.ensure(c.conv_id, Target(c.peer_id, group=group), title)
            entry.last_seq = max(entry.last_seq, c.last_seq)
            entry.read_seq = max(entry.read_seq, c.read_seq)
            entry.peer_read_seq = max(entry.peer_read_seq, c.peer_read_seq)
            entry.peer_delivered_seq = max(
                entry.peer_delivered_seq, c.peer_delivered_seq, c.peer_read_seq
            )

    def set_presence(self, user_id: int, online: bool) -> None:
        entry = self.entry_of(Target(user_id))
        if entry is not None:
            entry.online = online

    def ensure(self, conv_id: int, target: Target, title: str) -> Entry:
        entry = self.entries.get(conv_id)
        if entry is None:
            entry = self.entries[conv_id] = Entry(conv_id, target, title)
        return entry

    # ---- messages
    def thread(self, conv_id: int) -> Thread:
        return self.threads.setdefault(conv_id, Thread())

    def add_message(self, msg: client_pb2.ChatMessage) -> bool:
        """Store a message (once); True if its conversation was not in the sidebar yet."""
        known = msg.conv_id in self.entries
        mine = self.me is not None and msg.sender == self.me.user_id
        if msg.WhichOneof("to") == "to_group":
            target, title = Target(msg.to_group, group=True), f"g:{msg.to_group}"
        elif mine:
            target, title = Target(msg.to_user), str(msg.to_user)
        else:
            target, title = Target(msg.sender), msg.sender_account
        entry = self.ensure(msg.conv_id, target, title)
        entry.last_seq = max(entry.last_seq, msg.seq)
        if mine:  # storing my message moved my cursors there
            entry.read_seq = max(entry.read_seq, msg.seq)
        thread = self.thread(msg.conv_id)
        if not thread.newer_missing or msg.seq <= thread.newest + 1:  # else: a later page's
            thread.put(msg)
        if message_view.is_event(msg):
            message_view.fold(thread.amends, msg)
        if self.me is not None and message_view.mentions_me(msg, self.me.user_id):
            entry.mention_seq = max(entry.mention_seq, msg.seq)
        self.typing.get(msg.conv_id, {}).pop(msg.sender_account, None)  # it came
        thread.pending = [p for p in thread.pending if p.client_msg_id != msg.client_msg_id]
        return not known

    def add_pending(self, conv_id: int, client_msg_id: str, body: str) -> None:
        self.thread(conv_id).pending.append(Pending(client_msg_id, body, int(time.time() * 1000)))

    def acked(
        self,
        target: Target,
        ack: client_pb2.SendAck,
        body: str,
        kind: client_pb2.MessageKind.ValueType = client_pb2.MESSAGE_KIND_TEXT,
        ref_seq: int = 0,
        mentions: tuple[int, ...] = (),
    ) -> None:
        """My message to `target` is stored: it takes its seq among the others."""
        assert self.me is not None
        to = {"to_group": target.id} if target.group else {"to_user": target.id}
        self.add_message(
            client_pb2.ChatMessage(
                conv_id=ack.conv_id,
                seq=ack.seq,
                msg_id=ack.msg_id,
                sender=self.me.user_id,
                sender_account=self.me.account,
                body=body,
                ts_ms=ack.ts_ms,
                client_msg_id=ack.client_msg_id,
                kind=kind,
                ref_seq=ref_seq,
                mentions=mentions,
                **to,
            )
        )

    # ---- typing
    def set_typing(self, conv_id: int, account: str, until: float) -> None:
        """`account` is typing in `conv_id`: show it until `until` (monotonic)."""
        self.typing.setdefault(conv_id, {})[account] = until

    def typists(self, conv_id: int, now: float) -> list[str]:
        """Who is typing in `conv_id` now (expired ones are dropped), by account."""
        shown = self.typing.get(conv_id, {})
        for account in [a for a, until in shown.items() if until <= now]:
            del shown[account]
        return sorted(shown)

    def failed(self, conv_id: int, client_msg_id: str, error: str) -> None:
        for p in self.thread(conv_id).pending:
            if p.client_msg_id == client_msg_id:
                p.error = error

    # ---- receipts
    def receipt(self, r: client_pb2.Receipt) -> None:
        """A cursor moved: the friend's (marks), or mine on another device (unread)."""
        entry = self.entries.get(r.conv_id)
        if entry is None:
            return
        if self.me is not None and r.user_id == self.me.user_id:
            entry.read_seq = max(entry.read_seq, r.read_seq)
        else:
            entry.peer_read_seq = max(entry.peer_read_seq, r.read_seq)
            entry.peer_delivered_seq = max(entry.peer_delivered_seq, r.delivered_seq, r.read_seq)

    def set_counts(self, reply: client_pb2.GroupReadCountsReply) -> None:
        thread = self.thread(reply.conv_id)
        thread.members = reply.members or thread.members
        for c in reply.counts:
            thread.counts[c.seq] = c

    def my_seqs(self, conv_id: int) -> list[int]:
        """Seqs of my own stored messages in a loaded thread, ascending."""
        if self.me is None:
            return []
        me = self.me.user_id
        return [s for s, m in sorted(self.thread(conv_id).messages.items()) if m.sender == me]

    def mark(self, msg: client_pb2.ChatMessage) -> str:
        """The receipt mark of one of my stored messages: ✓ sent, ✓✓ delivered, ✓✓ read."""
        entry = self.entries.get(msg.conv_id)
        if entry is None:
            return "✓"
        if entry.target.group:
            thread = self.thread(msg.conv_id)
            count, others = thread.counts.get(msg.seq), max(thread.members - 1, 0)
            if count is None or not others:
                return "✓"
            if count.read:
                return f"✓✓ read {count.read}/{others}"
            return f"✓✓ {count.delivered}/{others}" if count.delivered else "✓"
        if entry.peer_read_seq >= msg.seq:
            return "✓✓ read"
        return "✓✓" if entry.peer_delivered_seq >= msg.seq else "✓"
