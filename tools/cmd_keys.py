"""`soimctl keys generate|add-node|revoke|show`: the cluster's keys on this host.

Role: admin commands over `fabric.keys`; each prints what it wrote or removed. No sockets:
running nodes notice a changed authorized/ folder by themselves within a second.

- `generate [--if-missing | --force]`: this host's node keypair, the gateway keypair, the
  cluster and token secrets, and authorized/node.key. Refuses (exit 2) to replace existing
  keys unless --force: new keys cut off every node and client that holds the old ones.
- `add-node NAME`: a keypair for another host (or one node) under nodes/, authorized at once.
- `revoke NAME`: stop admitting that key; every node reading this keys dir drops the peers
  that use it and refuses their handshakes and requests within a second.
- `show`: the public keys (the gateway key is what `soim --server-key` wants).

With --json each command prints one JSON object: the files written or removed, or the error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fabric import keys
from fabric.config import Config
from tools.cmd_errors import failed

_DIR_DEFAULT = "$SOIM_KEYS_DIR or var/keys"
"""The literal docopt hands over when --dir is not given (the usage text's [default: ...])."""


def run(args: dict[str, Any]) -> int:
    """Run one `keys` command; exit status 0, or 2 with one line on stderr (or JSON)."""
    raw = args.get("--dir")
    keys_dir = Config.from_env().keys_dir if raw in (None, _DIR_DEFAULT) else Path(raw)
    as_json = bool(args.get("--json"))
    if args.get("show"):
        return _show(keys_dir, as_json)
    try:
        if args.get("add-node"):
            written = keys.add_node(keys_dir, args["NAME"])
        elif args.get("revoke"):
            return _revoked(keys_dir, args["NAME"], keys.revoke(keys_dir, args["NAME"]), as_json)
        else:
            written = keys.generate(
                keys_dir, if_missing=bool(args.get("--if-missing")), force=bool(args.get("--force"))
            )
    except keys.KeysExist as err:
        return failed("KEYS_EXIST", str(err), as_json)
    except keys.KeyNameError as err:
        return failed("BAD_NAME", str(err), as_json)
    if as_json:
        print(json.dumps({"keys_dir": str(keys_dir), "written": [str(p) for p in written]}))
        return 0
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"keys in {keys_dir} are complete; nothing written")
    return 0


def _revoked(keys_dir: Path, name: str, removed: list[Path], as_json: bool) -> int:
    if as_json:
        print(json.dumps({"keys_dir": str(keys_dir), "removed": [str(p) for p in removed]}))
        return 0
    for path in removed:
        print(f"removed {path}")
    print(
        f"nodes reading {keys_dir} refuse {name!r} within a second; copy "
        f"{keys_dir / keys.AUTHORIZED} to the cluster's other hosts"
    )
    return 0


def _show(keys_dir: Path, as_json: bool) -> int:
    node = keys.load_node(keys_dir)
    gateway = keys.load_client_plane_public(keys_dir).decode()
    authorized = {name: key.decode() for key, name in keys.authorized(keys_dir).items()}
    if as_json:
        print(
            json.dumps({"gateway": gateway, "node": node.public.decode(), "authorized": authorized})
        )
        return 0
    print(f"gateway key (for soim --server-key): {gateway}")
    print(f"this host's node key:                {node.public.decode()}")
    for name, key in sorted(authorized.items()):
        print(f"authorized {name}: {key}")
    return 0
