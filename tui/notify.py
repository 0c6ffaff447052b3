"""Muted conversations and the announcement of a message that is not on screen.

Role: `Mutes` keeps the conversations a user muted, per account, in `muted.json` in the soim
config dir (`$XDG_CONFIG_HOME/soim`, default `~/.config/soim`; mode 0600; one JSON object
`{"ACCOUNT#UID": [conv_id, …]}`), so every `soim` started on this machine and account agrees.
`Notifier` decides, for each arriving message, whether to ring the terminal bell (BEL): not for
my own messages, not for the conversation on screen, not in a muted conversation unless the
message mentions me; and writes the window title (OSC 2) as `so-im (N)` with N the unread
messages of conversations that are not muted, or that hold an unread mention of me.
No sockets; one small file.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TextIO

from schema import client_pb2
from tui.app_state import Model

FILE_NAME = "muted.json"
BELL = "\a"
TITLE = "\x1b]2;{}\x07"


class Mutes:
    """The muted conversations of one account, kept in a file shared by its clients."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.owner = ""
        self.convs: set[int] = set()

    def load(self, account: str, user_id: int) -> None:
        """Read the muted conversations of this account (none if the file is absent or bad)."""
        self.owner = f"{account}#{user_id}"
        self.convs = {int(c) for c in self._read().get(self.owner, []) if isinstance(c, int)}

    def set(self, conv_id: int, muted: bool) -> None:
        """Mute or unmute a conversation, and write the file."""
        (self.convs.add if muted else self.convs.discard)(conv_id)
        if self.path is None or not self.owner:
            return
        data = self._read()
        data[self.owner] = sorted(self.convs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(data, file)
        os.replace(tmp, self.path)

    def _read(self) -> dict[str, list[int]]:
        if self.path is None:
            return {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text())
            if isinstance(data, dict):
                return data
        return {}


class Notifier:
    """The bell and the window title of one full-screen client."""

    def __init__(self, out: TextIO, mutes: Mutes, bell: bool = True, title: bool = True) -> None:
        self.out = out
        self.mutes = mutes
        self.bell = bell
        self.title = title
        self._shown = ""

    def wants_bell(self, model: Model, msg: client_pb2.ChatMessage) -> bool:
        """Whether `msg` (just arrived) is announced."""
        if model.me is None or msg.sender == model.me.user_id or msg.conv_id == model.open_conv:
            return False
        return msg.conv_id not in self.mutes.convs or model.me.user_id in msg.mentions

    def arrived(self, model: Model, msg: client_pb2.ChatMessage) -> None:
        """Ring for `msg` if it is announced (and the bell is on)."""
        if self.bell and self.wants_bell(model, msg):
            self.out.write(BELL)

    def update_title(self, model: Model) -> str:
        """Set the window title to the unread count of unmuted conversations (when it changed);
        return the title."""
        unread = sum(
            e.unread
            for c, e in model.entries.items()
            if c != model.open_conv and (c not in self.mutes.convs or e.mentioned)
        )
        text = f"so-im ({unread})" if unread else "so-im"
        if self.title and text != self._shown:
            self.out.write(TITLE.format(text))
            self._shown = text
        return text
