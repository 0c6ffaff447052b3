"""soimctl drain NODE: ask a node to hand its work to its peers and stop.

Role: one command. A gateway redirects its clients to the other gateways, every node announces
the drain so peers stop sending it new work, and it stops after the grace period.
Peer sockets: those of `tools.cluster_view.ClusterView` (zeroconf, events SUB, one DEALER to the
node's RPC ROUTER).
"""

from __future__ import annotations

import json
import time
from typing import Any

from fabric.methods import NODE, RpcError
from schema import cluster_pb2
from tools.cluster_view import ClusterView, with_view


def run(args: dict[str, Any]) -> int:
    """Drain the node named by NODE (its node id)."""
    node_id = args["NODE"]
    grace = int(args.get("--grace") or 0)

    async def drain(view: ClusterView) -> cluster_pb2.DrainReply | None:
        if view.membership.get(node_id) is None:
            return None
        return await view.peers.get(node_id).call(
            NODE["Drain"],
            cluster_pb2.DrainRequest(grace_s=grace, reason=args.get("--reason") or "soimctl drain"),
            timeout=5,
        )

    try:
        reply = with_view(args, drain)
    except RpcError as err:
        print(f"soimctl: drain {node_id}: {err}")
        return 1
    if reply is None:
        print(f"soimctl: no live node {node_id!r} in this cluster")
        return 1
    stops_in = max(reply.deadline_ms / 1000 - time.time(), 0.0)
    if args.get("--json"):
        print(json.dumps({"node_id": node_id, "deadline_ms": reply.deadline_ms}))
    else:
        print(f"{node_id} is draining; it stops in {stops_in:.1f}s")
    return 0
