"""`soimctl keys generate [--dir DIR] [--if-missing]`: write the cluster's Curve keys.

Role: one admin command over `fabric.keys.generate`; prints each file it wrote. No sockets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fabric import keys
from fabric.config import Config

_DIR_DEFAULT = "$SOIM_KEYS_DIR or var/keys"
"""The literal docopt hands over when --dir is not given (the usage text's [default: ...])."""


def run(args: dict[str, Any]) -> int:
    """Generate the keys and list what was written; exit status 0."""
    raw = args.get("--dir")
    keys_dir = Config.from_env().keys_dir if raw in (None, _DIR_DEFAULT) else Path(raw)
    written = keys.generate(keys_dir, if_missing=bool(args.get("--if-missing")))
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"keys in {keys_dir} are complete; nothing written")
    return 0
