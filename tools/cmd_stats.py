"""soimctl stats: one table of every live node's metrics.

Role: one command. Scrapes each node's Prometheus endpoint (its port is in the zeroconf record)
and sums the fabric's figures per node: frames in and out, refused frames, RPCs served, RPC
errors, load, peers alive.
Peer sockets: those of `tools.cluster_view.ClusterView`, plus one HTTP GET per node.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from fabric.membership import Peer
from tools.cluster_view import ClusterView, with_view

SCRAPE_TIMEOUT_S = 2.0
COLUMNS = {
    "soim_frames_in": "frames_in",
    "soim_frames_out": "frames_out",
    "soim_bad_frames": "bad_frames",
    "soim_rpc_served": "rpc_served",
    "soim_rpc_errors": "rpc_errors",
    "soim_node_load": "load",
    "soim_peers_alive": "peers_alive",
}


def metric_families(peer: Peer) -> list[Metric]:
    """Every metric family a node's /metrics serves now (OSError when it does not answer)."""
    url = f"http://{peer.info.host}:{peer.info.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        return list(text_string_to_metric_families(response.read().decode()))


def scrape(peer: Peer) -> dict[str, Any]:
    """The summed figures of one node, or an `error` entry when it did not answer."""
    row: dict[str, Any] = {"role": peer.role, "node_id": peer.node_id}
    try:
        families = metric_families(peer)
    except OSError as err:
        row["error"] = str(err)
        return row
    for column in COLUMNS.values():
        row[column] = 0.0
    for family in families:
        column = COLUMNS.get(family.name)
        if column is None:
            continue
        row[column] += sum(
            s.value for s in family.samples if not s.name.endswith(("_created", "_bucket"))
        )
    return row


def run(args: dict[str, Any]) -> int:
    """Print every live node's figures."""

    async def peers(view: ClusterView) -> list[Peer]:
        return view.membership.alive()

    rows = [scrape(p) for p in sorted(with_view(args, peers), key=lambda p: (p.role, p.node_id))]
    if args.get("--json"):
        print(json.dumps({"nodes": rows}, indent=2))
        return 0
    header = ["role", "node_id", *COLUMNS.values()]
    print(" ".join(f"{h:>12}" if i > 1 else f"{h:<24}" for i, h in enumerate(header)))
    for row in rows:
        cells = [row["role"], row["node_id"]]
        cells += (
            [row.get("error", "")[:40]]
            if "error" in row
            else [f"{row[c]:.0f}" for c in COLUMNS.values()]
        )
        print(" ".join(f"{c:>12}" if i > 1 else f"{c:<24}" for i, c in enumerate(cells)))
    return 0
