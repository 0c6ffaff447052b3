"""`soimctl keys generate|add-node|revoke|show`: the cluster's keys on this host.

Role: admin commands over `fabric.keys`; each prints what it wrote or removed. No sockets:
running nodes notice a changed authorized/ folder by themselves within a second.

- `generate [--if-missing]`: this host's node keypair, the gateway keypair, the cluster and
  token secrets, and authorized/node.key.
- `add-node NAME`: a keypair for another host (or one node) under nodes/, authorized at once.
- `revoke NAME`: stop admitting that key; every node reading this keys dir drops the peers
  that use it and refuses their handshakes and requests within a second.
- `show`: the public keys (the gateway key is what `soim --server-key` wants).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fabric import keys
from fabric.config import Config

_DIR_DEFAULT = "$SOIM_KEYS_DIR or var/keys"
"""The literal docopt hands over when --dir is not given (the usage text's [default: ...])."""


def run(args: dict[str, Any]) -> int:
    """Run one `keys` command; exit status 0, or 2 with one line on stderr."""
    raw = args.get("--dir")
    keys_dir = Config.from_env().keys_dir if raw in (None, _DIR_DEFAULT) else Path(raw)
    if args.get("show"):
        return _show(keys_dir, bool(args.get("--json")))
    try:
        if args.get("add-node"):
            written = keys.add_node(keys_dir, args["NAME"])
        elif args.get("revoke"):
            for path in keys.revoke(keys_dir, args["NAME"]):
                print(f"removed {path}")
            print(f"nodes reading {keys_dir} refuse {args['NAME']!r} within a second; copy "
                  f"{keys_dir / keys.AUTHORIZED} to the cluster's other hosts")
            return 0
        else:
            written = keys.generate(keys_dir, if_missing=bool(args.get("--if-missing")))
    except keys.KeyNameError as err:
        print(f"soimctl: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"keys in {keys_dir} are complete; nothing written")
    return 0


def _show(keys_dir: Path, as_json: bool) -> int:
    node = keys.load_node(keys_dir)
    gateway = keys.load_gateway_public(keys_dir).decode()
    authorized = {name: key.decode() for key, name in keys.authorized(keys_dir).items()}
    if as_json:
        print(json.dumps({"gateway": gateway, "node": node.public.decode(),
                          "authorized": authorized}))
        return 0
    print(f"gateway key (for soim --server-key): {gateway}")
    print(f"this host's node key:                {node.public.decode()}")
    for name, key in sorted(authorized.items()):
        print(f"authorized {name}: {key}")
    return 0
