"""The so-im command set, shared by `soim` and `soim --plain`: parsing and execution.

Role: `parse` turns a typed line into a `Command` by the grammar of `tui.grammar` or raises
`CommandError`; `execute` runs a command on a `ClientSession` and returns a result
(`tui.command_results`: a table, a line of text, a failure, …) that each front end renders its
own way. Nothing here draws or prints.
Peer sockets: those of the `ClientSession` it is given.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from docopt import DocoptExit, docopt

from fabric.methods import RpcError
from schema import client_pb2
from schema import common_pb2 as pb
from tui import cmd_messages, cmd_social, names
from tui.command_results import (
    Bye,
    Failure,
    Found,
    Help,
    History,
    Info,
    LoggedIn,
    LoggedOut,
    Opened,
    Result,
    Sent,
    Table,
)
from tui.grammar import SUMMARY, USAGES
from tui.session import ClientSession

SENDS = ("send", "msg", "edit", "recall", "reply")
"""The commands that send a message (each needs a client_msg_id)."""

USER_ID_MAX = (1 << 64) - 1
HISTORY_MAX = 100


class CommandError(Exception):
    """A line that is not a valid command: unknown (`usage` empty) or not matching its usage."""

    def __init__(self, name: str, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.usage = usage


@dataclass(frozen=True)
class Target:
    """A conversation to open: a friend (`group` False) or a group, by id; `name` is what the
    user called it (`bob`, `#devs`, `7`), which `label` shows."""

    id: int
    group: bool = False
    name: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"g:{self.id}" if self.group else str(self.id)

    @property
    def label(self) -> str:
        return self.name or str(self)


@dataclass(frozen=True)
class Command:
    """A parsed line: the command name and docopt's arguments."""

    name: str
    args: dict[str, Any]


# ---- parsing
def words_of(line: str) -> list[str]:
    """`line` split as a shell would split it, quotes only: `-p "correct horse"` is one word,
    backslashes and '#' are plain characters. A line whose quotes do not pair up (`don't
    worry`) is split on white space, as people type chat text."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.escape = ""
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:  # an unpaired quote: an apostrophe, most likely
        return line.split()


def parse(line: str) -> Command:
    """The command on `line` (without a leading '/'); CommandError if it is not one."""
    words = words_of(line)
    if not words:
        raise CommandError("", "empty command")
    name = words[0].lower()
    usage = USAGES.get(name)
    if usage is None:
        raise CommandError(name, f"unknown command: {name}")
    try:
        args = docopt(usage, words[1:], default_help=False)
    except DocoptExit:
        raise CommandError(name, f"usage: {usage_lines(name)[0]}", usage) from None
    return Command(name, dict(args))


def usage_lines(name: str) -> list[str]:
    """The usage patterns of one command, one per line, without 'Usage:'."""
    head = USAGES[name].split("\n\n")[0].removeprefix("Usage:")
    return [ln.strip() for ln in head.splitlines() if ln.strip()]


def help_of(name: str) -> list[str]:
    """`help COMMAND`: what the command does and its whole usage."""
    name = name.removeprefix("/").lower()
    if name not in USAGES:
        raise CommandError("help", f"unknown command: {name}; help lists them")
    summary = SUMMARY.get(name)
    return ([f"{name} — {summary}"] if summary else []) + USAGES[name].splitlines()


def help_lines() -> list[str]:
    lines = []
    for name in USAGES:
        patterns = usage_lines(name)
        lines.append(f"{patterns[0]}  — {SUMMARY[name]}")
        lines += [f"{p}" for p in patterns[1:]]
    return lines


def number(text: str, what: str) -> int:
    """A positive 64-bit id typed by the user; CommandError if it is not one."""
    if not text.isdigit() or not 0 < int(text) <= USER_ID_MAX:
        raise CommandError(what, f"{what} must be a positive number, got {text!r}")
    return int(text)


def target(text: str) -> Target:
    """USER_ID or g:GROUP_ID."""
    match = re.fullmatch(r"(g:)?(\d+)", text.strip())
    if match is None:
        raise CommandError("open", f"open a friend's USER_ID or g:GROUP_ID, not {text!r}")
    return Target(number(match.group(2), "id"), group=bool(match.group(1)))


# ---- execution
async def execute(
    cmd: Command, session: ClientSession, current: Target | None, client_msg_id: str = ""
) -> Result:
    """Run `cmd`; RpcErrors and bad arguments come back as a Failure naming the cause.

    `current` is the open conversation (for `history`, `group users`); `client_msg_id`, if
    given, is the id a `send` uses, so the caller can recognise the message when it comes back.
    """
    try:
        return await _run(cmd, session, current, client_msg_id)
    except RpcError as err:
        return Failure(humanise(err))
    except CommandError as err:
        return Failure(str(err), err.usage)


WORDS = {
    pb.NOT_FOUND: "no such user or group",
    pb.NOT_FRIEND: "not your friend yet",
    pb.SELF_MESSAGE: "you cannot message yourself",
    pb.NOT_MEMBER: "you are not a member of that group",
}
"""Codes said in words of their own (their detail alone, when there is one)."""

REFUSALS = {
    (pb.NOT_FOUND, False): "no such user: {to}",
    (pb.NOT_FRIEND, False): "not your friend yet: {to} (add {to} first)",
    (pb.SELF_MESSAGE, False): "you cannot message yourself",
    (pb.NOT_FOUND, True): "no such group: {to}",
    (pb.NOT_MEMBER, True): "you are not in group {to} (group join first)",
}
"""Why a send or an open to a user (False) or a group (True) was refused, by code."""


def humanise(err: RpcError) -> str:
    """'Already exists: group name 'x' is taken' from ALREADY_EXISTS and its detail; a code
    of `WORDS` as its detail alone ('No such user: bob'), or its words."""
    if err.code in WORDS:
        text = err.detail or WORDS[err.code]
        return text[:1].upper() + text[1:]
    if err.code in pb.ErrorCode.values():
        name = pb.ErrorCode.Name(err.code).replace("_", " ").capitalize()
    else:
        name = f"Error {err.code}"
    return f"{name}: {err.detail}" if err.detail else name


async def _run(
    cmd: Command, session: ClientSession, current: Target | None, client_msg_id: str
) -> Result:
    a = cmd.args
    match cmd.name:
        case "login":
            reply = await session.login(a["-u"], a["-p"])
            return LoggedIn(reply, session.endpoint)
        case "register":
            reply = await session.register(a["-u"], a["-p"], a["-n"] or "")
            return LoggedIn(reply, session.endpoint)
        case "send" | "msg":
            to = (
                await resolve(session, a["WHO"])
                if cmd.name == "msg"
                else await resolve(session, a["-g"] or a["-u"], group=bool(a["-g"]))
            )
            return await send(session, to, " ".join(a["TEXT"]), client_msg_id)
        case "users":
            return await _users(session, a["--all"])
        case "friends":
            return _friends_table(await session.friends())
        case "group":
            return await _group(a, session, current)
        case "search" if a["WORDS"]:
            query = " ".join(a["WORDS"])
            page = await session.search_messages(query)
            return Found(query, list(page.messages), page.more)
        case "search" if a["--more"]:  # the client keeps the search (tui.message_search)
            return Failure("search --more continues this client's last search WORDS")
        case "jump" | "mute" | "unmute":
            return Failure(f"{cmd.name} works in the full-screen soim")
        case "search":
            found = (await session.search_users(a["-u"])).users
            return Table(
                ("uid", "account", "nickname"),
                [(str(u.user_id), u.account, u.nickname) for u in found],
            )
        case "add":
            uid, label = await names.user(session, a["USER"] or a["-u"])
            added = await session.add_friend(uid)
            if added.result == client_pb2.ADD_FRIEND_ACCEPTED:
                return Info(f"friends now with {label}")
            return Info(f"friend request sent to {label}")
        case "me":
            me = await session.me()
            return Table(("uid", "account"), [(str(me.user_id), me.account)])
        case "history":
            return await _history(session, current, a["-n"])
        case "open":
            return await open_target(session, await resolve(session, a["TARGET"]))
        case "edit" | "recall" | "reply":
            return await _amend(cmd.name, a, session, current, client_msg_id)
        case "help":
            return Help(help_of(a["COMMAND"]) if a["COMMAND"] else help_lines())
        case name if name in cmd_social.RELATIONS:
            return Info(await cmd_social.relation(name, session, a["USER"]))
        case "passwd":
            return Info(await cmd_social.passwd(session, a["OLD_PASSWORD"], a["NEW_PASSWORD"]))
        case "delete-account":
            said = await cmd_social.delete_account(session, a["-p"], a["--yes"])
            return LoggedOut(said) if a["--yes"] else Info(said)
        case "logout":
            await session.logout()
            return LoggedOut("logged out; the remembered login is forgotten")
        case _:
            return Bye()


async def resolve(session: ClientSession, word: str, group: bool | None = None) -> Target:
    """The friend or group a command names: an account name or a user id, #NAME or
    g:GROUP_ID (with `group` True: a group's id or name, bare)."""
    if group if group is not None else names.is_group(word):
        gid, label = await names.group(session, word)
        return Target(gid, group=True, name=label)
    uid, label = await names.user(session, word)
    return Target(uid, name=label)


def refusal(code: pb.ErrorCode.ValueType, to: Target) -> str:
    """Why a send to `to`, or its opening, was refused ('Not your friend yet: bob …')."""
    text = REFUSALS[(code, to.group)].format(to=to.label)
    return text[:1].upper() + text[1:]


async def send(
    session: ClientSession,
    to: Target,
    body: str,
    client_msg_id: str = "",
    kind: client_pb2.MessageKind.ValueType = client_pb2.MESSAGE_KIND_TEXT,
    ref_seq: int = 0,
) -> Sent:
    """Send `body` to a friend or group (an edit or recall of, or a reply to, `ref_seq` with
    `kind`; a group's @account members mentioned); Sent once it is stored. A refusal says why
    in words naming `to` (the code stays)."""
    mentions: list[int] = []
    try:
        if to.group:
            mentions = await cmd_messages.mentions(session, to.id, body)
            ack = await session.send(
                body,
                to_group=to.id,
                client_msg_id=client_msg_id,
                kind=kind,
                ref_seq=ref_seq,
                mentions=mentions,
            )
        else:
            ack = await session.send(
                body, to_user=to.id, client_msg_id=client_msg_id, kind=kind, ref_seq=ref_seq
            )
    except RpcError as err:
        if ref_seq:
            raise cmd_messages.refusal(err, ref_seq) from None
        if (err.code, to.group) in REFUSALS and not err.detail:
            raise RpcError(err.code, refusal(err.code, to)) from None
        raise
    return Sent(ack, to, body, kind, ref_seq, tuple(mentions))


async def open_target(session: ClientSession, to: Target) -> Result:
    """Find the conversation of a friend or group I belong to."""
    if to.group:
        for g in (await session.groups()).groups:
            if g.group_id == to.id:
                return Opened(to, g.group_id, g.name)
        return Failure(refusal(pb.NOT_MEMBER, to))
    for f in (await session.friends()).friends:
        if f.user_id == to.id and f.state == client_pb2.FRIEND_STATE_ACCEPTED:
            return Opened(to, f.conv_id, f.nickname or f.account)
    return Failure(refusal(pb.SELF_MESSAGE if me_too(session, to) else pb.NOT_FRIEND, to))


def me_too(session: ClientSession, to: Target) -> bool:
    """Whether `to` is the logged-in user."""
    return not to.group and session.user is not None and session.user.user_id == to.id


async def _users(session: ClientSession, everyone: bool) -> Table:
    rows: list[tuple[str, ...]] = []
    cursor = 0
    for _ in range(100):  # at most 100 pages of 100
        page = await session.online_users(cursor, 100, everyone)
        rows += [(str(u.user_id), u.account) for u in page.users]
        cursor = page.next_cursor
        if not cursor:
            break
    return Table(("uid", "account"), rows)


def _friends_table(reply: client_pb2.FriendsReply) -> Table:
    state = {
        client_pb2.FRIEND_STATE_OUTGOING: "request sent",
        client_pb2.FRIEND_STATE_INCOMING: "wants to add you",
    }
    blocked = {u.user_id for u in reply.blocked}
    rows: list[tuple[str, ...]] = [
        (
            str(f.user_id),
            f.account,
            f.nickname,
            "blocked"
            if f.user_id in blocked
            else state.get(f.state, "online" if f.online else "offline"),
        )
        for f in reply.friends
    ]
    rows += [
        (str(u.user_id), u.account, u.nickname, "blocked")
        for u in reply.blocked
        if u.user_id not in {f.user_id for f in reply.friends}
    ]
    return Table(("uid", "account", "nickname", "online"), rows)


async def _group(a: dict[str, Any], session: ClientSession, current: Target | None) -> Result:
    if a["create"]:
        g = (
            await session.call(
                "GroupCreate",
                client_pb2.GroupCreateRequest(
                    name=" ".join(a["NAME"]),
                    visibility=client_pb2.GROUP_INVITE_ONLY
                    if a["--invite-only"]
                    else client_pb2.GROUP_VISIBILITY_UNSPECIFIED,
                    history=client_pb2.GROUP_HISTORY_ALL
                    if a["--all-history"]
                    else client_pb2.GROUP_HISTORY_UNSPECIFIED,
                ),
            )
        ).group
        return Info(f"created group {g.name} gid={g.group_id}")
    if a["invite"]:
        gid, uid = (
            (await names.group(session, a["GROUP_ID"]))[0],
            (await names.user(session, a["USER_ID"]))[0],
        )
        await session.call("GroupInvite", client_pb2.GroupInviteRequest(group_id=gid, user_id=uid))
        return Info(f"invited {uid} to group {gid}")
    if a["search"]:
        found = (await session.group_search(a["PREFIX"])).groups
        return Table(
            ("gid", "name", "limit", "members", "created"),
            [
                (str(g.group_id), g.name, str(g.user_limit), str(g.members), stamp(g.created_ms))
                for g in found
            ],
        )
    if a["join"]:
        g = (await session.group_join((await names.group(session, a["GROUP_ID"]))[0])).group
        return Info(f"joined group {g.name} gid={g.group_id} ({g.members}/{g.user_limit})")
    if a["kick"] or a["owner"]:
        return Info(await cmd_social.group_member(session, a["kick"], a["GROUP_ID"], a["USER"]))
    if a["leave"]:
        gid, label = await names.group(session, a["GROUP_ID"])
        await session.group_leave(gid)
        return Info(f"left group {label}")
    if a["users"]:
        if a["GROUP_ID"]:
            gid = (await names.group(session, a["GROUP_ID"]))[0]
        elif current is not None and current.group:
            gid = current.id
        else:
            return Failure("which group? give GROUP_ID or open the group first", USAGES["group"])
        members = (await session.group_users(gid)).members
        return Table(
            ("uid", "account", "nickname", "online", "last active"),
            [
                (
                    str(m.user_id),
                    m.account,
                    m.nickname,
                    "online" if m.online else "offline",
                    stamp(m.last_active_ms) if m.last_active_ms else "never",
                )
                for m in members
            ],
        )
    mine = (await session.groups()).groups
    return Table(
        ("gid", "name", "limit", "members/limit", "owner", "created"),
        [
            (
                str(g.group_id),
                g.name,
                str(g.user_limit),
                f"{g.members}/{g.user_limit}",
                g.owner_account or str(g.owner),
                stamp(g.created_ms),
            )
            for g in mine
        ],
    )


async def _amend(
    name: str, a: dict[str, Any], session: ClientSession, current: Target | None, client_msg_id: str
) -> Result:
    """edit, recall or reply in the open conversation."""
    if current is None:
        return Failure(f"{name}: no open conversation: open NAME or open #GROUP first")
    opened = await open_target(session, current)
    if not isinstance(opened, Opened):
        return opened
    try:
        kind, seq, body = await cmd_messages.plan(name, a, session, opened.conv_id)
    except cmd_messages.NoMessage as err:
        return Failure(str(err), USAGES[name])
    return await send(session, current, body, client_msg_id, kind, seq)


async def _history(session: ClientSession, current: Target | None, n: str) -> Result:
    if current is None:
        return Failure("no open conversation: open NAME or open #GROUP first")
    limit = number(n, "N")
    if limit > HISTORY_MAX:
        return Failure(f"history -n: at most {HISTORY_MAX}")
    opened = await open_target(session, current)
    if not isinstance(opened, Opened):
        return opened
    page = await newest(session, opened.conv_id, limit)
    return History(opened.conv_id, list(page.messages))


async def newest(session: ClientSession, conv_id: int, limit: int) -> client_pb2.HistoryReply:
    """The newest `limit` messages of a conversation (History with no position)."""
    reply: client_pb2.HistoryReply = await session.call(
        "History", client_pb2.HistoryRequest(conv_id=conv_id, limit=limit)
    )
    return reply


def stamp(ms: int) -> str:
    """Local date and time of a unix-ms instant, to the minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000))
