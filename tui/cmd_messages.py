"""The message commands edit, recall and reply, and the @mentions of a group message.

Role: work out what `edit [SEQ] TEXT`, `recall [SEQ]` and `reply [SEQ] TEXT` send in the open
conversation — the kind, the seq referred to and the text. Without SEQ, edit and recall take
my newest message that can still change and reply takes the newest message of someone else,
looked up in the conversation's newest page. `mentions` resolves the @account names of a group
message to member ids (one GroupUsers call, only when the text holds an '@'). The caller
(`tui.commands`) sends it. Peer sockets: those of the `ClientSession` it is given.
"""

from __future__ import annotations

import re
from typing import Any

from fabric.methods import RpcError
from schema import client_pb2
from schema import common_pb2 as pb
from tui import message_view
from tui.session import ClientSession

LOOK_BACK = 100
"""Messages of the newest page searched for the default SEQ."""
_SEQ = re.compile(r"#?(\d{1,19})")
REFUSALS = {
    pb.NOT_FOUND: "no message #{seq} here (or it was recalled)",
    pb.NOT_AUTHOR: "message #{seq} is not yours: only its author may change it",
    pb.EDIT_WINDOW_CLOSED: "message #{seq} is too old to change",
    pb.INVALID_ARGUMENT: "message #{seq} cannot be changed or answered",
}
"""Why an edit, recall or reply of message #seq was refused, by code."""


class NoMessage(Exception):
    """No SEQ was given and no message fits."""


def split_seq(words: list[str]) -> tuple[int, list[str]]:
    """(SEQ, the rest) when the first word is a seq ('12' or '#12') and more words follow;
    else (0, words)."""
    if len(words) > 1 and (match := _SEQ.fullmatch(words[0])) and int(match.group(1)):
        return int(match.group(1)), words[1:]
    return 0, words


def seq_of(word: str) -> int:
    """The seq a word names ('12' or '#12'); NoMessage if it names none."""
    match = _SEQ.fullmatch(word)
    if match is None or not int(match.group(1)):
        raise NoMessage(f"SEQ is a message number like 12 or #12, not {word!r}")
    return int(match.group(1))


async def plan(
    name: str, args: dict[str, Any], session: ClientSession, conv_id: int
) -> tuple[client_pb2.MessageKind.ValueType, int, str]:
    """(kind, ref_seq, text) of an edit, recall or reply in conversation `conv_id`."""
    if name == "recall":
        seq = seq_of(args["SEQ"]) if args["SEQ"] else await _default(session, conv_id, True)
        return message_view.RECALL, seq, ""
    seq, words = split_seq(list(args["TEXT"]))
    kind = message_view.EDIT if name == "edit" else message_view.TEXT
    return kind, seq or await _default(session, conv_id, mine=name == "edit"), " ".join(words)


async def _default(session: ClientSession, conv_id: int, mine: bool) -> int:
    """The seq of my newest message still shown (mine) or of the newest from someone else."""
    me = session.user.user_id if session.user is not None else 0
    page = await _newest(session, conv_id)
    amends: dict[int, client_pb2.ChatMessage] = {}
    for msg in page:
        if message_view.is_event(msg):
            message_view.fold(amends, msg)
    for msg in reversed(page):
        if message_view.is_event(msg) or (msg.sender == me) != mine:
            continue
        if message_view.shown(msg, amends) != message_view.RECALLED:
            return msg.seq
    raise NoMessage(
        "no message of yours to change here"
        if mine
        else "no message of someone else to reply to here"
    )


async def _newest(session: ClientSession, conv_id: int) -> list[client_pb2.ChatMessage]:
    reply = await session.call(
        "History", client_pb2.HistoryRequest(conv_id=conv_id, limit=LOOK_BACK)
    )
    return list(reply.messages)


def refusal(err: RpcError, seq: int) -> RpcError:
    """`err` of an edit, recall or reply of message `seq`, saying why in words."""
    text = REFUSALS.get(err.code)
    return RpcError(err.code, text.format(seq=seq)) if text and not err.detail else err


async def mentions(session: ClientSession, group_id: int, body: str) -> list[int]:
    """Ids of the members of group `group_id` that `body` names as @account."""
    if "@" not in body:
        return []
    members = (await session.group_users(group_id)).members
    return message_view.mentioned_ids(body, {m.account: m.user_id for m in members})
