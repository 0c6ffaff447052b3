"""soimctl users / user add|disable|enable|kick|passwd|unlock: who is online, and account
administration.

Role: one module for the user commands. `users` pages the online users of every router and
names them through a directory; `user add` registers an account; `user disable` blocks one
(its tokens are revoked and its live sessions end on every gateway within a second), `user
enable` lets it in again, `user kick` ends its sessions and revokes its tokens without blocking
it, `user passwd` sets a new password (and ends its sessions; the password is asked twice on a
terminal, or read as one line from stdin with --password-stdin, never taken from the command
line), `user unlock` lifts the account-wide login lock. USER is a user id, or an account name
(`@name` for an account name made of digits only). With --json every outcome, errors
included, is one JSON object. `user list` and `user delete` live in tools.cmd_accounts.
Peer sockets: those of `tools.cluster_view.ClusterView` (DEALERs to routers and a directory).
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from typing import Any

from fabric.methods import RpcError
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import DIRECTORY
from schema.contracts.router import ROUTER
from tools.cluster_view import ClusterView, with_view

PAGE = 500
TIMEOUT_S = 5.0

Action = Callable[[int, dict[str, Any]], tuple[str, Any]]
"""From a user id and the arguments to (Directory rpc name, request)."""

ACTIONS: dict[str, tuple[Action, str]] = {
    "disable": (
        lambda u, a: ("SetDisabled", cluster_pb2.DirDisableRequest(user_id=u, disabled=True)),
        "disabled; its sessions ended",
    ),
    "enable": (
        lambda u, a: ("SetDisabled", cluster_pb2.DirDisableRequest(user_id=u, disabled=False)),
        "enabled",
    ),
    "kick": (
        lambda u, a: (
            "EndSessions",
            cluster_pb2.DirEndSessionsRequest(user_id=u, reason=a.get("--message") or ""),
        ),
        "sessions ended",
    ),
    "passwd": (
        lambda u, a: (
            "SetPassword",
            cluster_pb2.DirPasswordRequest(user_id=u, password=a.get("--password") or ""),
        ),
        "password changed; sessions ended",
    ),
    "unlock": (lambda u, a: ("Unlock", cluster_pb2.UserRef(user_id=u)), "unlocked"),
}
"""`user <word> USER`: the request to send and what to say when it worked."""


async def online_users(view: ClusterView) -> list[dict[str, Any]]:
    """Every online user of the cluster, ascending by id."""
    ids: set[int] = set()
    for router in view.membership.alive("router"):
        client = view.peers.get(router.node_id)
        cursor = 0
        while True:
            page = await client.call(
                ROUTER["OnlineUsers"],
                client_pb2.OnlineUsersRequest(cursor=cursor, limit=PAGE),
                timeout=TIMEOUT_S,
            )
            ids.update(page.user_ids)
            if not page.more or not page.user_ids:
                break
            cursor = page.user_ids[-1]
    rows: list[dict[str, Any]] = []
    ordered = sorted(ids)
    for start in range(0, len(ordered), PAGE):
        users = await ask_directory(
            view, "Users", cluster_pb2.UserIds(user_ids=ordered[start : start + PAGE])
        )
        rows += [
            {"user_id": u.user_id, "account": u.account, "nickname": u.nickname}
            for u in users.users
        ]
    return rows


async def ask_directory(view: ClusterView, name: str, request: Any) -> Any:
    """Call Directory rpc `name` on a live directory."""
    live = view.membership.alive("directory")
    if not live:
        raise RpcError(pb.UNAVAILABLE, "no directory node is alive")
    return await view.peers.get(live[0].node_id).call(DIRECTORY[name], request, timeout=TIMEOUT_S)


async def resolve(view: ClusterView, user: str) -> int:
    """The user id named by USER: digits are an id, anything else (or `@name`) an account."""
    if user.isdigit():
        return int(user)
    account = user.removeprefix("@")
    hits = await ask_directory(view, "SearchUsers", client_pb2.SearchUsersRequest(prefix=account))
    for found in hits.users:
        if found.account == account:
            return int(found.user_id)
    raise RpcError(pb.NOT_FOUND, f"no account {account!r}")


def run(args: dict[str, Any]) -> int:
    """`users` or one `user ...` command."""
    try:
        if args.get("add"):
            return _add(args)
        for word in ACTIONS:
            if args.get(word):
                return _act(args, word)
        rows = with_view(args, online_users, roles=("router", "directory"), whole=True)
    except RpcError as err:
        return failed(args, err)
    if args.get("--json"):
        print(json.dumps({"users": rows}, indent=2))
        return 0
    print(f"{len(rows)} online user(s)")
    if rows:
        print("user_id | account")
    for r in rows:
        print(f"{r['user_id']} | {r['account']}")
    return 0


def failed(args: dict[str, Any], err: RpcError) -> int:
    if args.get("--json"):
        name = pb.ErrorCode.Name(err.code) if err.code in pb.ErrorCode.values() else str(err.code)
        print(json.dumps({"error": name, "detail": err.detail}))
    else:
        print(f"soimctl: {err}")
    return 1


def _add(args: dict[str, Any]) -> int:
    request = cluster_pb2.DirRegisterRequest(
        account=args["ACCOUNT"],
        password=args["--password"] or "",
        nickname=args.get("--nickname") or "",
    )

    async def add(view: ClusterView) -> cluster_pb2.DirAuthReply:
        return await ask_directory(view, "Register", request)

    reply = with_view(args, add, roles=("directory",))
    user = {"user_id": reply.user.user_id, "account": reply.user.account}
    print(json.dumps(user) if args.get("--json") else f"{user['user_id']} | {user['account']}")
    return 0


def new_password(args: dict[str, Any]) -> str:
    """The new password of `user passwd`: one line of stdin with --password-stdin, else asked
    twice on the terminal. INVALID_ARGUMENT without a terminal or when the two differ."""
    if args.get("--password-stdin"):
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not sys.stdin.isatty():
        raise RpcError(
            pb.INVALID_ARGUMENT, "stdin is not a terminal: give the password with --password-stdin"
        )
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise RpcError(pb.INVALID_ARGUMENT, "the two passwords differ")
    return first


def _act(args: dict[str, Any], word: str) -> int:
    make, done = ACTIONS[word]
    if word == "passwd":
        args = {**args, "--password": new_password(args)}

    async def act(view: ClusterView) -> cluster_pb2.UserRecord:
        name, request = make(await resolve(view, args["USER"]), args)
        return await ask_directory(view, name, request)

    reply = with_view(args, act, roles=("directory",))
    out = {
        "user_id": reply.user_id,
        "account": reply.account,
        "disabled": reply.disabled,
        "done": word,
    }
    print(json.dumps(out) if args.get("--json") else f"{reply.user_id} | {reply.account} | {done}")
    return 0
