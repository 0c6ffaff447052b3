"""Entry point of the `soim-node ROLE` console script: run one node of any role.

Role: pick the role's node class from the command line and hand it to `fabric.node.main`,
which reads the SOIM_* environment and runs the node; `--help` prints the roles and the ports
each opens, an unknown role prints the usage and exits 2. No sockets of its own (the node's are
listed in the help text).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from fabric.node import main as run_node

NODE_CLASSES = {
    "gateway": ("nodes.gateway.node", "GatewayNode"),
    "router": ("nodes.router.node", "RouterNode"),
    "directory": ("nodes.directory.node", "DirectoryNode"),
    "storage": ("nodes.storage.node", "StorageNode"),
}
"""Where each role's node class lives; only the role that runs is imported."""

USAGE = f"""usage: soim-node ROLE

Run one so-im node; ROLE is one of: {", ".join(NODE_CLASSES)}.
Configured by SOIM_* environment variables (see docs/operations.md).

Ports every node binds on SOIM_HOST (default 0: any free port, announced by discovery):
  SOIM_RPC_PORT      RPC ROUTER (Curve)      other nodes and soimctl connect
  SOIM_EVENTS_PORT   events PUB (Curve)      other nodes subscribe
  SOIM_METRICS_PORT  HTTP /metrics           Prometheus scrapes
A gateway also binds:
  SOIM_GATEWAY_PORT  client ROUTER (Curve)   soim clients connect (default 7000)
Fixed ports for deployments and who needs them open: docs/deploy.md."""


def main(argv: Sequence[str] | None = None) -> int:
    """`soim-node ROLE`: the node's exit status; 2 with the usage for a bad command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if len(args) != 1 or args[0] not in NODE_CLASSES:
        problem = "missing ROLE" if not args else f"unknown role {' '.join(args)!r}"
        print(f"soim-node: {problem}\n{USAGE}", file=sys.stderr)
        return 2
    module, cls = NODE_CLASSES[args[0]]
    return run_node(getattr(importlib.import_module(module), cls))
