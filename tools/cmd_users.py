"""soimctl users / user add / user disable: who is online, and account administration.

Role: one module for the user commands. `users` pages the online users of every router and
names them through a directory; `user add` registers an account; `user disable` blocks one
(its sessions can no longer log in or resume).
Peer sockets: those of `tools.cluster_view.ClusterView` (DEALERs to routers and a directory).
"""

from __future__ import annotations

import json
from typing import Any

from fabric.methods import RpcError
from nodes.directory.api import DIRECTORY
from nodes.router.api import ROUTER
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from tools.cluster_view import ClusterView, with_view

PAGE = 500
TIMEOUT_S = 5.0


async def online_users(view: ClusterView) -> list[dict[str, Any]]:
    """Every online user of the cluster, ascending by id."""
    ids: set[int] = set()
    for router in view.membership.alive("router"):
        client = view.peers.get(router.node_id)
        cursor = 0
        while True:
            page = await client.call(ROUTER["OnlineUsers"], client_pb2.OnlineUsersRequest(
                cursor=cursor, limit=PAGE), timeout=TIMEOUT_S)
            ids.update(page.user_ids)
            if not page.more or not page.user_ids:
                break
            cursor = page.user_ids[-1]
    rows: list[dict[str, Any]] = []
    ordered = sorted(ids)
    for start in range(0, len(ordered), PAGE):
        users = await _directory(view, "Users", cluster_pb2.UserIds(
            user_ids=ordered[start:start + PAGE]))
        rows += [{"user_id": u.user_id, "account": u.account, "nickname": u.nickname}
                 for u in users.users]
    return rows


async def _directory(view: ClusterView, name: str, request: Any) -> Any:
    live = view.membership.alive("directory")
    if not live:
        raise RpcError(pb.UNAVAILABLE, "no directory node is alive")
    return await view.peers.get(live[0].node_id).call(DIRECTORY[name], request,
                                                      timeout=TIMEOUT_S)


def run(args: dict[str, Any]) -> int:
    """`users`, `user add` or `user disable`."""
    try:
        if args.get("add"):
            return _add(args)
        if args.get("disable"):
            return _disable(args)
        rows = with_view(args, online_users, roles=("router", "directory"))
    except RpcError as err:
        print(f"soimctl: {err}")
        return 1
    if args.get("--json"):
        print(json.dumps({"users": rows}, indent=2))
        return 0
    print(f"{len(rows)} online user(s)")
    for r in rows:
        print(f"{r['user_id']} | {r['account']}")
    return 0


def _add(args: dict[str, Any]) -> int:
    request = cluster_pb2.DirRegisterRequest(account=args["ACCOUNT"],
                                             password=args["--password"] or "",
                                             nickname=args.get("--nickname") or "")

    async def add(view: ClusterView) -> cluster_pb2.DirAuthReply:
        return await _directory(view, "Register", request)

    reply = with_view(args, add, roles=("directory",))
    user = {"user_id": reply.user.user_id, "account": reply.user.account}
    print(json.dumps(user) if args.get("--json") else f"{user['user_id']} | {user['account']}")
    return 0


def _disable(args: dict[str, Any]) -> int:
    user_id = int(args["USER_ID"])

    async def disable(view: ClusterView) -> cluster_pb2.UserRecord:
        return await _directory(view, "SetDisabled",
                                cluster_pb2.DirDisableRequest(user_id=user_id, disabled=True))

    reply = with_view(args, disable, roles=("directory",))
    print(json.dumps({"user_id": reply.user_id, "disabled": reply.disabled})
          if args.get("--json") else f"{reply.user_id} | {reply.account} | disabled")
    return 0
