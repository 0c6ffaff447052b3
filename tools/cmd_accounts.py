"""soimctl user list / user delete: every account, and removing one.

Role: `user list [--prefix P]` pages through the accounts of every shard in name order
(Directory.ListUsers) and prints id, account, nickname, disabled, created and last active;
`user delete USER` removes an account — name, tokens, friendships, group memberships — and ends
its sessions (Directory.DeleteUser). Its messages stay, shown as from `deleted#<id>`; groups it
owned pass to their longest-standing member. Deleting asks on a terminal and refuses without
--yes when stdin is not one. With --json every outcome, errors included, is one JSON object.
Peer sockets: those of `tools.cluster_view.ClusterView` (a DEALER to a directory).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from fabric.methods import RpcError
from schema import cluster_pb2
from schema import common_pb2 as pb
from tools.cluster_view import ClusterView, with_view
from tools.cmd_users import PAGE, ask_directory, failed, resolve


def run(args: dict[str, Any]) -> int:
    """`user list` or `user delete`."""
    try:
        return _delete(args) if args.get("delete") else _list(args)
    except RpcError as err:
        return failed(args, err)


async def accounts(view: ClusterView, prefix: str) -> list[cluster_pb2.UserRecord]:
    """Every account starting with `prefix`, in name order."""
    out: list[cluster_pb2.UserRecord] = []
    after = ""
    while True:
        page = await ask_directory(
            view, "ListUsers", cluster_pb2.ListUsersRequest(prefix=prefix, after=after, limit=PAGE)
        )
        out += page.users
        if len(page.users) < PAGE:
            return out
        after = page.users[-1].account


def _list(args: dict[str, Any]) -> int:
    prefix = args.get("--prefix") or ""
    users = with_view(args, lambda view: accounts(view, prefix), roles=("directory",))
    rows = [
        {
            "user_id": u.user_id,
            "account": u.account,
            "nickname": u.nickname,
            "disabled": u.disabled,
            "created_ms": u.created_ms,
            "last_active_ms": u.last_active_ms,
        }
        for u in users
    ]
    if args.get("--json"):
        print(json.dumps({"users": rows}, indent=2))
        return 0
    print(f"{len(rows)} account(s)")
    if rows:
        print("user_id | account | nickname | disabled | created | last active")
    for r in rows:
        print(
            f"{r['user_id']} | {r['account']} | {r['nickname']} | "
            f"{'yes' if r['disabled'] else 'no'} | {_when(r['created_ms'])} | "
            f"{_when(r['last_active_ms'])}"
        )
    return 0


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000)) if ms else "never"


def _confirm(question: str) -> bool:
    """Ask on stderr (stdout is the command's answer), read the reply from stdin."""
    print(question, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _delete(args: dict[str, Any]) -> int:
    ask = not args.get("--yes")
    if ask and not sys.stdin.isatty():
        raise RpcError(pb.INVALID_ARGUMENT, "stdin is not a terminal: confirm with --yes")

    async def delete(view: ClusterView) -> cluster_pb2.DeleteUserReply | None:
        user_id = await resolve(view, args["USER"])
        found = await ask_directory(view, "Users", cluster_pb2.UserIds(user_ids=[user_id]))
        if not found.users:
            raise RpcError(pb.NOT_FOUND, f"no user {user_id}")
        if ask:
            question = (
                f"Delete {found.users[0].account} (user {user_id}) with its friendships "
                "and group memberships? Its messages stay. [y/N] "
            )
            if not await asyncio.to_thread(_confirm, question):  # the view keeps listening
                return None
        return await ask_directory(view, "DeleteUser", cluster_pb2.UserRef(user_id=user_id))

    reply = with_view(args, delete, roles=("directory",))
    if reply is None:
        print("soimctl: nothing deleted")
        return 1
    out = {
        "user_id": reply.user.user_id,
        "account": reply.user.account,
        "done": "delete",
        "friendships": reply.friendships,
        "groups_left": reply.groups_left,
        "groups_handed_over": list(reply.groups_handed_over),
    }
    if args.get("--json"):
        print(json.dumps(out))
    else:
        print(
            f"{out['user_id']} | {out['account']} | deleted: {out['friendships']} "
            f"friendship(s), {out['groups_left']} group membership(s)"
        )
    return 0
