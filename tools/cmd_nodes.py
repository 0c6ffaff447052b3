"""soimctl nodes: list the live nodes of a cluster (role, node id, endpoints, load, age).

Role: one command; prints a table or, with --json, a JSON list.
Peer sockets: those of `tools.cluster_view.ClusterView` (zeroconf, one events SUB).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fabric.config import Config
from tools.cluster_view import ClusterView, config_for


async def _collect(cfg: Config, wait_s: float) -> list[dict[str, Any]]:
    async with ClusterView(cfg) as view:
        peers = await view.settle(wait_s)
    now = time.time()
    return [
        {
            "role": p.role,
            "node_id": p.node_id,
            "host": p.info.host,
            "endpoints": dict(p.info.endpoints),
            "metrics_port": p.info.metrics_port,
            "version": p.info.version,
            "load": round(p.load, 3),
            "sessions": p.sessions,
            "age_s": round(now - p.info.started_at, 1),
        }
        for p in sorted(peers, key=lambda p: (p.role, p.node_id))
    ]


def run(args: dict[str, Any]) -> int:
    """Print the cluster's live nodes."""
    cfg = config_for(args)
    rows = asyncio.run(_collect(cfg, float(args.get("--wait") or 5)))
    if args.get("--json"):
        print(json.dumps({"cluster": cfg.cluster, "nodes": rows}, indent=2))
        return 0
    print(f"cluster {cfg.cluster}: {len(rows)} live node(s)")
    print(f"{'role':<10} {'node id':<36} {'load':>6} {'age':>8}  endpoints")
    for r in rows:
        eps = " ".join(f"{k}={v}" for k, v in r["endpoints"].items())
        print(f"{r['role']:<10} {r['node_id']:<36} {r['load']:>6} {r['age_s']:>7}s  {eps}")
    return 0
