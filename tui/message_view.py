"""How edits, recalls, replies and mentions read: the final state of a conversation's messages.

Role: pure functions over `ChatMessage`s for both front ends. Edits and recalls are stored as
events after the message they change; `fold` keeps, per changed seq, the event that decides
what it shows (a recall wins over any edit, else the newest edit), `shown` gives a message's
text in its final state ("message recalled", or the edited text marked "(edited)"), `quote`
the excerpt a reply shows of the message it answers, `line_tail` how a `--plain` line tells
them, `mentions_me` whether a message names me (a mention counts as unread even in a muted
conversation), and `mentioned_ids` resolves the @account names of a text to user ids.
No sockets, no terminal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from schema import client_pb2
from schema.contracts.message import MAX_MENTIONS

EDIT = client_pb2.MESSAGE_KIND_EDIT
RECALL = client_pb2.MESSAGE_KIND_RECALL
TEXT = client_pb2.MESSAGE_KIND_TEXT
RECALLED = "message recalled"
EDITED = "(edited)"
QUOTE_CHARS = 40
_MENTION = re.compile(r"(?<![\w.@-])@([a-z0-9_.-]{3,32})")


def is_event(msg: client_pb2.ChatMessage) -> bool:
    """An edit or recall: it changes another message and is not shown by itself."""
    return msg.kind != TEXT


def fold(amends: dict[int, client_pb2.ChatMessage], msg: client_pb2.ChatMessage) -> None:
    """Record the edit or recall `msg` in `amends` (changed seq -> deciding event)."""
    have = amends.get(msg.ref_seq)
    if have is None or (have.kind != RECALL and (msg.kind == RECALL or msg.seq > have.seq)):
        amends[msg.ref_seq] = msg


def shown(msg: client_pb2.ChatMessage, amends: Mapping[int, client_pb2.ChatMessage]) -> str:
    """The text of message `msg` as it stands after every edit and recall in `amends`."""
    event = amends.get(msg.seq)
    if event is None:
        return msg.body if msg.body or msg.kind != TEXT else RECALLED
    return RECALLED if event.kind == RECALL else f"{event.body} {EDITED}"


def quote(
    ref_seq: int,
    messages: Mapping[int, client_pb2.ChatMessage],
    amends: Mapping[int, client_pb2.ChatMessage],
) -> str:
    """'↳ #SEQ sender: excerpt' of the message a reply answers (its seq alone if not loaded)."""
    target = messages.get(ref_seq)
    if target is None:
        return f"↳ #{ref_seq}"
    text = " ".join(shown(target, amends).split())
    if len(text) > QUOTE_CHARS:
        text = text[: QUOTE_CHARS - 1] + "…"
    return f"↳ #{ref_seq} {target.sender_account or target.sender}: {text}"


def line_tail(msg: client_pb2.ChatMessage) -> str:
    """What follows the sender in a --plain line: ': text', ' (reply to #3): text',
    ' edited #5: new text', ' recalled #5' (a recalled message itself: ': message recalled')."""
    if msg.kind == EDIT:
        return f" edited #{msg.ref_seq}: {msg.body}"
    if msg.kind == RECALL:
        return f" recalled #{msg.ref_seq}"
    reply = f" (reply to #{msg.ref_seq})" if msg.ref_seq else ""
    return f"{reply}: {shown(msg, {})}"


def mentions_me(msg: client_pb2.ChatMessage, me: int) -> bool:
    """Does `msg` (someone else's message) mention user `me`?"""
    return msg.sender != me and me in msg.mentions


def mentioned_ids(body: str, members: Mapping[str, int]) -> list[int]:
    """User ids of the members (account -> user id) named '@account' in `body`, in order of
    first mention, at most MAX_MENTIONS; names that are not members are plain text."""
    out: list[int] = []
    for name in _MENTION.findall(body):
        uid = members.get(name.lower().rstrip("."))
        if uid is not None and uid not in out:
            out.append(uid)
    return out[:MAX_MENTIONS]
