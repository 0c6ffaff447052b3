"""soimctl groups: every group of the cluster with its size, owner and rules (visibility,
history).

Role: one command; pages Directory.ListGroups.
Peer sockets: those of `tools.cluster_view.ClusterView` (a DEALER to a directory).
"""

from __future__ import annotations

import json
import time
from typing import Any

from fabric.methods import RpcError
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import DIRECTORY
from tools.cluster_view import ClusterView, with_view

PAGE = 500
_VISIBILITY = {client_pb2.GROUP_PUBLIC: "public", client_pb2.GROUP_INVITE_ONLY: "invite-only"}
_HISTORY = {client_pb2.GROUP_HISTORY_FROM_JOIN: "from-join", client_pb2.GROUP_HISTORY_ALL: "all"}


async def all_groups(view: ClusterView) -> list[dict[str, Any]]:
    """Every group, ascending by id."""
    live = view.membership.alive("directory")
    if not live:
        raise RpcError(pb.UNAVAILABLE, "no directory node is alive")
    client = view.peers.get(live[0].node_id)
    rows: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = await client.call(
            DIRECTORY["ListGroups"],
            cluster_pb2.ListGroupsRequest(cursor=cursor, limit=PAGE),
            timeout=5,
        )
        rows += [
            {
                "group_id": g.group_id,
                "name": g.name,
                "user_limit": g.user_limit,
                "members": g.members,
                "owner": g.owner,
                "owner_account": g.owner_account,
                "created_ms": g.created_ms,
                "visibility": _VISIBILITY.get(g.visibility, "?"),
                "history": _HISTORY.get(g.history, "?"),
            }
            for g in page.groups
        ]
        if len(page.groups) < PAGE:
            return rows
        cursor = page.groups[-1].group_id


def run(args: dict[str, Any]) -> int:
    """Print every group."""
    try:
        rows = with_view(args, all_groups, roles=("directory",))
    except RpcError as err:
        print(f"soimctl: {err}")
        return 1
    if args.get("--json"):
        print(json.dumps({"groups": rows}, indent=2))
        return 0
    print(f"{len(rows)} group(s)")
    if rows:
        print("group_id | name | user_limit | members | owner | visibility | history | created")
    for g in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(g["created_ms"] / 1000))
        print(
            f"{g['group_id']} | {g['name']} | {g['user_limit']} | "
            f"{g['members']}/{g['user_limit']} | {g['owner_account'] or g['owner']} | "
            f"{g['visibility']} | {g['history']} | {created}"
        )
    return 0
