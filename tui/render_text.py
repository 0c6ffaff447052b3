"""Command results and messages as so-im-style text lines (what `soim --plain` prints).

Role: turn a `tui.commands` result into the lines the original so-im client printed — tables as
`uid | account | …` rows under a header, `uid=…, entryHost=h:p` after a login, `bye bye` —
and an incoming message into `sender: text`. The full-screen client shows the same lines in its
console view. No sockets, no terminal.
"""

from __future__ import annotations

from schema import client_pb2
from tui.command_results import (
    Bye,
    Failure,
    Found,
    Help,
    History,
    Info,
    LoggedIn,
    Opened,
    Result,
    Sent,
    Table,
)
from tui.commands import stamp
from tui.message_view import line_tail

SEPARATOR = " | "


def result_lines(result: Result) -> list[str]:
    """The lines that show `result`."""
    match result:
        case Table(columns=columns, rows=rows):
            return [SEPARATOR.join(columns)] + ([SEPARATOR.join(r) for r in rows] or ["(none)"])
        case Info(text=text):
            return [text]
        case Failure(text=text):
            return [text]
        case LoggedIn(reply=reply, endpoint=endpoint):
            return [f"uid={reply.user_id}, entryHost={entry_host(endpoint)}"]
        case Sent(ack=ack, target=target):
            return [f"sent to {target.label} seq={ack.seq}"]
        case Opened(target=target, title=title):
            return [f"open: {title} ({target})"]
        case History(messages=messages):
            return [message_line(m) for m in messages] or ["(no messages)"]
        case Found(query=query, messages=messages, more=more, first=first):
            return found_lines(query, messages, more, first)
        case Help(lines=lines):
            return lines
        case Bye():
            return ["bye bye"]
    raise TypeError(f"not a command result: {result!r}")


def found_lines(
    query: str, messages: list[client_pb2.ChatMessage], more: bool, first: int
) -> list[str]:
    """Search results as `[N] YYYY-MM-DD HH:MM sender: text` lines, and what to type next."""
    if not messages:
        return [f"no messages hold {query!r}" if first == 1 else "no more results"]
    lines = [f"[{first + i}] {stamp(m.ts_ms)} {message_line(m)}" for i, m in enumerate(messages)]
    hint = "jump N opens one" + ("; search --more shows older results" if more else "")
    return [*lines, f"({hint})"]


def entry_host(endpoint: str) -> str:
    """'h:p' of a ZeroMQ endpoint 'tcp://h:p'."""
    return endpoint.split("://", 1)[-1]


def message_line(msg: client_pb2.ChatMessage) -> str:
    """`sender: text` — prefixed with `[g:GID] ` for a group message; an edit, recall or
    reply says so (`tui.message_view.line_tail`)."""
    sender = msg.sender_account or str(msg.sender)
    where = f"[g:{msg.to_group}] " if msg.WhichOneof("to") == "to_group" else ""
    return f"{where}{sender}{line_tail(msg)}"
