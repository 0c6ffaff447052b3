"""Validation of every name and argument a directory accepts, each failure with its ErrorCode.

Role: pure checks, raising `fabric.methods.RpcError` with the specific code (INVALID_ACCOUNT,
INVALID_PASSWORD, INVALID_NAME, INVALID_ARGUMENT) and a short detail a client may show. No
sockets, no I/O.

Strings reach us already decoded: protobuf refuses a string field that is not valid UTF-8 before
a handler runs (BAD_REQUEST). What is left to check here is length and character set.
"""

from __future__ import annotations

import re

from fabric.methods import RpcError
from schema import client_pb2
from schema import common_pb2 as pb

ACCOUNT_RE = re.compile(r"[a-z0-9_.-]{3,32}")
"""An account name: 3-32 of lower-case letters, digits, '_', '.' and '-'."""

ACCOUNT_PREFIX_RE = re.compile(r"[a-z0-9_.-]{1,32}")
PASSWORD_MIN, PASSWORD_MAX = 8, 128
NAME_MAX = 32
"""Nicknames and group names: 1-32 printable characters."""

GROUP_LIMIT_DEFAULT = 500
GROUP_LIMIT_MIN, GROUP_LIMIT_MAX = 2, 1000


def account(value: str) -> str:
    """An account name as stored; INVALID_ACCOUNT unless 3-32 of [a-z0-9_.-]."""
    if not ACCOUNT_RE.fullmatch(value):
        raise RpcError(pb.INVALID_ACCOUNT, "account: 3-32 characters of a-z 0-9 _ . -")
    return value


def password(value: str) -> str:
    """A password; INVALID_PASSWORD unless 8-128 characters (any, but NUL)."""
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX or "\0" in value:
        raise RpcError(pb.INVALID_PASSWORD, f"password: {PASSWORD_MIN}-{PASSWORD_MAX} characters")
    return value


def name(value: str, what: str = "name") -> str:
    """A nickname or group name; INVALID_NAME unless 1-32 printable characters.

    Leading or trailing white space is refused too: MariaDB compares strings ignoring trailing
    spaces, so "x" and "x " would be one name there and two in SQLite.
    """
    if not 1 <= len(value) <= NAME_MAX or not value.isprintable() or value != value.strip():
        raise RpcError(
            pb.INVALID_NAME, f"{what}: 1-{NAME_MAX} printable characters, no outer spaces"
        )
    return value


def account_prefix(value: str) -> str:
    """A SearchUsers prefix; INVALID_ARGUMENT unless 1-32 of [a-z0-9_.-]."""
    if not ACCOUNT_PREFIX_RE.fullmatch(value):
        raise RpcError(pb.INVALID_ARGUMENT, "prefix: 1-32 characters of a-z 0-9 _ . -")
    return value


def name_prefix(value: str) -> str:
    """A GroupSearch prefix; INVALID_ARGUMENT unless 1-32 printable characters."""
    if not 1 <= len(value) <= NAME_MAX or not value.isprintable():
        raise RpcError(pb.INVALID_ARGUMENT, f"prefix: 1-{NAME_MAX} printable characters")
    return value


def group_limit(value: int) -> int:
    """A group's user_limit: 0 means the default; INVALID_ARGUMENT outside 2-1,000."""
    if value == 0:
        return GROUP_LIMIT_DEFAULT
    if not GROUP_LIMIT_MIN <= value <= GROUP_LIMIT_MAX:
        raise RpcError(
            pb.INVALID_ARGUMENT,
            f"user_limit: {GROUP_LIMIT_MIN}-{GROUP_LIMIT_MAX}, or 0 for the default",
        )
    return value


GROUP_VISIBILITIES = (client_pb2.GROUP_PUBLIC, client_pb2.GROUP_INVITE_ONLY)
GROUP_HISTORIES = (client_pb2.GROUP_HISTORY_FROM_JOIN, client_pb2.GROUP_HISTORY_ALL)
GROUP_RULE_DEFAULT = (client_pb2.GROUP_PUBLIC, client_pb2.GROUP_HISTORY_FROM_JOIN)
"""A new group is public (found by search, joined by id: the so-im way) and shows a member the
messages from their join on (what was said before they came stays with those who were there);
the owner may make it invite-only or open its history to all."""


def group_rules(visibility: int, history: int) -> tuple[int, int]:
    """A new group's (visibility, history); unset parts take GROUP_RULE_DEFAULT."""
    visibility, history = group_rule_change(visibility, history)
    return visibility or GROUP_RULE_DEFAULT[0], history or GROUP_RULE_DEFAULT[1]


def group_rule_change(visibility: int, history: int) -> tuple[int, int]:
    """A settings change: 0 leaves a part; INVALID_ARGUMENT for an unknown value."""
    if visibility and visibility not in GROUP_VISIBILITIES:
        raise RpcError(pb.INVALID_ARGUMENT, "visibility: public or invite-only")
    if history and history not in GROUP_HISTORIES:
        raise RpcError(pb.INVALID_ARGUMENT, "history: from join or all")
    return visibility, history


def user_id(value: int, what: str = "user_id") -> int:
    """A user or group id; INVALID_ARGUMENT when 0 (never allocated)."""
    if value <= 0:
        raise RpcError(pb.INVALID_ARGUMENT, f"{what} is required")
    return value
