"""What a so-im command returns: the results each front end renders its own way.

Role: plain data — a table, a line of text, a failure, a login, a sent message, an opened
conversation, a page of history or of search hits, help, a logout, goodbye — made by
`tui.commands` and `tui.message_search`, drawn by `tui.render_text` (and the full-screen
client). No sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schema import client_pb2

if TYPE_CHECKING:
    from tui.commands import Target


@dataclass(frozen=True)
class Table:
    """Rows under a header, so-im style."""

    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]


@dataclass(frozen=True)
class Info:
    """One line that says what happened."""

    text: str


@dataclass(frozen=True)
class Failure:
    """What went wrong, for the user."""

    text: str
    usage: str = ""


@dataclass(frozen=True)
class LoggedIn:
    """Login or register succeeded; `endpoint` is the gateway serving the session."""

    reply: client_pb2.LoginReply
    endpoint: str


@dataclass(frozen=True)
class Sent:
    """A message is stored: its ack, and what was sent where."""

    ack: client_pb2.SendAck
    target: Target
    body: str
    kind: client_pb2.MessageKind.ValueType = client_pb2.MESSAGE_KIND_TEXT
    ref_seq: int = 0  # the message edited, recalled or replied to
    mentions: tuple[int, ...] = ()


@dataclass(frozen=True)
class Opened:
    """A conversation is now the open one."""

    target: Target
    conv_id: int
    title: str


@dataclass(frozen=True)
class History:
    """The newest messages of a conversation, oldest first."""

    conv_id: int
    messages: list[client_pb2.ChatMessage] = field(default_factory=list)


@dataclass(frozen=True)
class Found:
    """A page of message search results, newest first, numbered from `first`."""

    query: str
    messages: list[client_pb2.ChatMessage]
    more: bool
    first: int = 1


@dataclass(frozen=True)
class Help:
    """The usage of every command."""

    lines: list[str]


class LoggedOut(Info):
    """The session ended at the user's request; the remembered login is gone."""


@dataclass(frozen=True)
class Bye:
    """The user asked to quit."""


Result = Table | Info | Failure | LoggedIn | Sent | Opened | History | Found | Help | Bye
