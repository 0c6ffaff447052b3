"""Names for ids: the user or group a person typed (`bob`, `#rustaceans`) as the id to send.

Role: `user` and `group` turn a word of a command into an id and the label to show for it.
A number is an id, as before; a user's name is an exact account name, looked up in my friends
list (any state) and then with SearchUsers; a group's name (with or without its '#') is looked
up in my groups and then with GroupSearch — the exact name, or else the one name that differs
only in case. A name nobody has is an RpcError NOT_FOUND ("no such user: bob"), worded for
the user by `tui.commands.humanise`. `is_group` tells a group word (`#name`, `g:ID`) from a
user word. Peer sockets: those of the `ClientSession` it is given.
"""

from __future__ import annotations

import re

from fabric.methods import RpcError
from schema import common_pb2 as pb
from tui.session import ClientSession

ID_MAX = (1 << 64) - 1
NAME_MAX = 32
ACCOUNT = re.compile(r"[a-z0-9_.-]{3,32}")
"""What an account name can be: anything else is nobody's, without asking."""


def is_group(word: str) -> bool:
    """`#name` and `g:ID` name a group; anything else a user."""
    return word.startswith("#") or re.fullmatch(r"g:\d+", word) is not None


def _id(word: str) -> int | None:
    """The id a number spells, None for a word that is not a number."""
    if not word.isdigit():
        return None
    if not 0 < int(word) <= ID_MAX:
        raise RpcError(pb.INVALID_ARGUMENT, f"an id is a positive 64-bit number, not {word}")
    return int(word)


async def user(session: ClientSession, word: str) -> tuple[int, str]:
    """(user id, label) of a user id or an account name."""
    uid = _id(word)
    if uid is not None:
        return uid, word
    account = word.lower()
    if ACCOUNT.fullmatch(account) is None:
        raise RpcError(pb.NOT_FOUND, f"no such user: {word}")
    for f in (await session.friends()).friends:
        if f.account == account:
            return f.user_id, account
    for u in (await session.search_users(account)).users:
        if u.account == account:
            return u.user_id, account
    raise RpcError(pb.NOT_FOUND, f"no such user: {word}")


async def group(session: ClientSession, word: str) -> tuple[int, str]:
    """(group id, label) of a group id (`7`, `g:7`) or a group name (`#devs`, `devs`)."""
    gid = _id(word.removeprefix("g:"))
    if gid is not None:
        return gid, f"g:{gid}"
    name = word.removeprefix("#")
    if not 0 < len(name) <= NAME_MAX:
        raise RpcError(pb.NOT_FOUND, f"no such group: {word}")
    found = _named(name, [(g.name, g.group_id) for g in (await session.groups()).groups])
    if found is None:
        found = _named(
            name, [(g.name, g.group_id) for g in (await session.group_search(name)).groups]
        )
    if found is None:
        raise RpcError(pb.NOT_FOUND, f"no such group: #{name}")
    return found[1], f"#{found[0]}"


def _named(name: str, groups: list[tuple[str, int]]) -> tuple[str, int] | None:
    """The (name, id) called exactly `name`, or else the only one called so ignoring case."""
    exact = [g for g in groups if g[0] == name]
    folded = [g for g in groups if g[0].casefold() == name.casefold()]
    return exact[0] if exact else folded[0] if len(folded) == 1 else None
