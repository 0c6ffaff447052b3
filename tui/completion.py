"""Tab completion in the full-screen client: command names, account names and group names.

Role: `Names` remembers the accounts and groups the client has seen (friends, my groups, the
rows of any table a command printed — search, users, group search, members — and the senders
of messages), and names a known conversation at once (`/open bob` without a round trip).
`Completer.complete` completes the word before the cursor: a command after a leading '/', a
command after `/help`, a `#group` for a word starting with '#', an account (or, on an empty
word, any account or #group) elsewhere; Tab again replaces it with the next candidate.
No sockets, no terminal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schema import client_pb2
from tui.command_results import Table
from tui.commands import Target


class Names:
    """Accounts and groups seen, by name, with their ids."""

    def __init__(self) -> None:
        self.accounts: dict[str, int] = {}
        self.groups: dict[str, int] = {}

    def clear(self) -> None:
        self.accounts.clear()
        self.groups.clear()

    def saw_user(self, account: str, user_id: int) -> None:
        if account and user_id:
            self.accounts[account] = user_id

    def saw_friends(self, friends: Iterable[client_pb2.Friend]) -> None:
        for f in friends:
            self.saw_user(f.account, f.user_id)

    def saw_groups(self, groups: Iterable[client_pb2.GroupInfo]) -> None:
        for g in groups:
            if g.name:
                self.groups[g.name] = g.group_id

    def saw_table(self, table: Table) -> None:
        """The users (uid, account) or groups (gid, name) a command's table lists."""
        cols = table.columns
        for ids, names, into in (("uid", "account", self.accounts), ("gid", "name", self.groups)):
            if ids in cols and names in cols:
                i, n = cols.index(ids), cols.index(names)
                into.update(
                    (row[n], int(row[i])) for row in table.rows if row[n] and row[i].isdigit()
                )

    def target(self, word: str) -> Target | None:
        """The conversation `word` names (`#devs`, `bob`), if it is a known name."""
        if word.startswith("#"):
            gid = self.groups.get(word[1:])
            return Target(gid, group=True, name=word) if gid else None
        uid = self.accounts.get(word.lower())
        return Target(uid, name=word.lower()) if uid else None


@dataclass
class _Cycle:
    """The last completion: what came before and after the word, the candidates, the one
    shown, and the line it made (Tab on that same line shows the next)."""

    before: str
    after: str
    candidates: list[str]
    index: int
    line: tuple[str, int]


class Completer:
    """Completes the input line's word before the cursor."""

    def __init__(self, names: Names, commands: Iterable[str]) -> None:
        self.names = names
        self.commands = sorted(commands)
        self._cycle: _Cycle | None = None

    def complete(self, text: str, cursor: int) -> tuple[str, int, list[str]]:
        """The line and cursor after Tab, and every candidate (none: the line is unchanged)."""
        cycle = self._cycle
        if cycle is not None and cycle.line == (text, cursor):
            cycle.index = (cycle.index + 1) % len(cycle.candidates)
        else:
            start = text.rfind(" ", 0, cursor) + 1
            candidates = self.candidates(text[:start], text[start:cursor])
            if not candidates:
                self._cycle = None
                return text, cursor, []
            cycle = self._cycle = _Cycle(text[:start], text[cursor:], candidates, 0, ("", 0))
        word = cycle.candidates[cycle.index] + " "
        cycle.line = (cycle.before + word + cycle.after.lstrip(" "), len(cycle.before + word))
        return *cycle.line, cycle.candidates

    def candidates(self, before: str, word: str) -> list[str]:
        """What `word` may become, after the text `before` it on the line."""
        if before == "" and word.startswith("/"):
            return [f"/{c}" for c in self.commands if c.startswith(word[1:].lower())]
        if before.split() == ["/help"]:
            return [c for c in self.commands if c.startswith(word.lower())]
        groups = sorted(f"#{g}" for g in self.names.groups)
        groups = [_quoted(g) for g in groups if g.lower().startswith(word.lower())]
        if word.startswith("#"):
            return groups
        accounts = sorted(a for a in self.names.accounts if a.startswith(word.lower()))
        return accounts + (groups if not word else [])


def _quoted(word: str) -> str:
    """A group name with a space in quotes, as commands split words like a shell."""
    return f'"{word}"' if " " in word else word
