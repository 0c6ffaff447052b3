"""soimctl: the so-im admin CLI (docopt). Parses the command line and hands it to one module.

Role: dispatch only. Each command lives in its own module under tools/ (`cmd_<name>.py` or
`bench_<what>.py`) exposing `run(args) -> int`; this file owns the usage text.

Usage:
  soimctl nodes [--json] [--cluster NAME] [--wait S]
  soimctl keys generate [--dir DIR] [--if-missing]
  soimctl shards [--json]
  soimctl bench fabric [--json] [--seconds S] [--inflight N]
  soimctl bench store [--json] [--backend B] [--rows N]
  soimctl -h | --help
  soimctl --version

Options:
  --json           Print JSON for scripts instead of a table.
  --cluster NAME   Cluster to look at [default: $SOIM_CLUSTER or soim].
  --wait S         Seconds to listen for nodes before answering [default: 2].
  --dir DIR        Where keys go [default: $SOIM_KEYS_DIR or var/keys].
  --if-missing     Keep existing keys; only create what is missing.
  --seconds S      Length of each benchmark phase in seconds [default: 3].
  --inflight N     RPC calls kept in flight [default: 64].
  --backend B      Store backend to measure: mysql or sqlite [default: sqlite].
  --rows N         Rows to write [default: 200000].
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from docopt import docopt

from fabric.config import ConfigError

VERSION = "0.1.0"

_COMMANDS = {
    ("nodes",): "tools.cmd_nodes",
    ("keys", "generate"): "tools.cmd_keys",
    ("shards",): "tools.cmd_shards",
    ("bench", "fabric"): "tools.bench_fabric",
    ("bench", "store"): "tools.bench_store",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `soimctl` console script."""
    args: dict[str, Any] = docopt(__doc__ or "", argv=argv, version=f"soimctl {VERSION}")
    for words, module in _COMMANDS.items():
        if all(args.get(w) for w in words):
            try:
                return int(importlib.import_module(module).run(args))
            except ConfigError as err:
                print(f"soimctl: {err}", file=sys.stderr)
                return 2
    print("soimctl: unknown command", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
