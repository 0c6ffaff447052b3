"""soimctl prometheus-targets: the live nodes' metrics endpoints for Prometheus.

Role: one command. From the membership view (the nodes' authenticated heartbeats) it lists each
live node's host and metrics port, labelled with its role, node id and cluster; with --json it
prints them in Prometheus' file-based discovery format (file_sd_configs: one target group per
node). --out FILE writes that JSON to FILE atomically (a temporary file renamed over it, so
Prometheus never reads half a file) and refuses to write an empty list, which would drop every
target and silence the node-down alerts: it keeps the previous file and exits 1.
Peer sockets: those of `tools.cluster_view.ClusterView` (discovery, one events SUB).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from fabric.config import Config
from tools.cluster_view import ClusterView, config_for


def target(host: str, port: int) -> str:
    """host:port as Prometheus wants it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _groups(cfg: Config, wait_s: float) -> list[dict[str, Any]]:
    async with ClusterView(cfg) as view:
        peers = await view.settle(wait_s)
    return [
        {
            "targets": [target(p.info.host, p.info.metrics_port)],
            "labels": {"role": p.role, "node": p.node_id, "cluster": cfg.cluster},
        }
        for p in sorted(peers, key=lambda p: (p.role, p.node_id))
        if p.info.metrics_port > 0
    ]


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run(args: dict[str, Any]) -> int:
    """Print (or write) the live nodes' metrics targets."""
    cfg = config_for(args)
    groups = asyncio.run(_groups(cfg, float(args.get("--wait") or 5)))
    text = json.dumps(groups, indent=2) + "\n"
    out = args.get("--out")
    if out:
        if not groups:
            print(
                f"soimctl: no live node found in cluster {cfg.cluster}; {out} left as it was",
                file=sys.stderr,
            )
            return 1
        _write_atomically(Path(out), text)
        return 0
    if args.get("--json"):
        print(text, end="")
        return 0
    print(f"cluster {cfg.cluster}: {len(groups)} target(s)")
    print(f"{'role':<10} {'node id':<36}  target")
    for g in groups:
        print(f"{g['labels']['role']:<10} {g['labels']['node']:<36}  {g['targets'][0]}")
    return 0
