"""The gateway keys a `soim` client trusts, and where each comes from.

Role: decide the one gateway public key the client will use (the *pin*), in this order:
`--server-key`; `gateway.key` in SOIM_KEYS_DIR (the keys of the cluster run on this machine,
e.g. by `make run`); the key remembered for the cluster (SOIM_CLUSTER) in the user's
`known_gateways` file. With none of these the client trusts on first use: `KnownGateways.remember`
writes the key the cluster's gateways announced, once one of them proved it holds it.

The file is `$XDG_CONFIG_HOME/soim/known_gateways` (default `~/.config/soim/known_gateways`),
mode 0600, like ssh's known_hosts: one `CLUSTER KEY` line per cluster (KEY is the gateway's
Curve public key, Z85, 40 characters); a line starting with `#` is a comment. Deleting a line
makes the next connection to that cluster a first use again.
No sockets: files only. `tui.gateway_pick` dials with the pin.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from zmq.utils import z85

from fabric import keys

FILE_NAME = "known_gateways"
Z85_KEY = re.compile(r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class KnownKeysError(Exception):
    """The known_gateways file cannot be read or written; `str()` names the file and line."""


@dataclass(frozen=True)
class Pin:
    """The gateway key to use and where it came from (for the messages of a refusal)."""

    key: bytes
    source: str  # "--server-key", or the file it was read from
    remedy: str  # what to do if the cluster's key really changed


def known_gateways_path(env: Mapping[str, str]) -> Path:
    """$XDG_CONFIG_HOME/soim/known_gateways, or ~/.config/soim/known_gateways."""
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path(env.get("HOME") or Path.home()) / ".config"
    return root / "soim" / FILE_NAME


def fingerprint(key: bytes) -> str:
    """ssh-style fingerprint of a Z85 Curve public key: SHA256:<base64 of its digest>."""
    digest = hashlib.sha256(z85.decode(key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class KnownGateways:
    """The user's known_gateways file: cluster name -> remembered gateway key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> dict[str, bytes]:
        """Every remembered key by cluster; KnownKeysError names a malformed line."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as err:
            raise KnownKeysError(f"cannot read {self.path}: {err}") from None
        found: dict[str, bytes] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):  # '#' may occur in a Z85 key: whole lines only
                continue
            fields = line.split()
            if len(fields) != 2 or not _NAME.match(fields[0]) or not Z85_KEY.match(fields[1]):
                raise KnownKeysError(
                    f"{self.path} line {number}: expected 'CLUSTER KEY' "
                    "(a Z85 key of 40 characters); fix or delete the line"
                )
            found[fields[0]] = fields[1].encode()
        return found

    def lookup(self, cluster: str) -> bytes | None:
        return self.entries().get(cluster)

    def remember(self, cluster: str, key: bytes) -> None:
        """Append `cluster key` (the file and its directory are created private)."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, f"{cluster} {key.decode()}\n".encode())
            finally:
                os.close(fd)
        except OSError as err:
            raise KnownKeysError(f"cannot write {self.path}: {err}") from None


def resolve_pin(server_key: str, keys_dir: Path, cluster: str, known: KnownGateways) -> Pin | None:
    """The pin from --server-key, SOIM_KEYS_DIR or known_gateways; None on first use.

    A gateway.key that exists but is broken raises `keys.KeysMissing` (a configuration error).
    """
    if server_key:
        return Pin(
            server_key.encode(),
            "--server-key",
            "check the key you passed with --server-key against the cluster's operator",
        )
    local = Path(keys_dir) / (keys.CLIENT_PLANE + ".key")
    if local.exists():
        return Pin(
            keys.load_client_plane_public(keys_dir),
            str(local),
            f"{local} is the key of the cluster run on this machine; point "
            "SOIM_KEYS_DIR elsewhere or pass --server-key to reach another cluster",
        )
    remembered = known.lookup(cluster)
    if remembered is not None:
        return Pin(
            remembered,
            str(known.path),
            f"if the cluster's operator confirms its gateway key changed, delete the "
            f"line '{cluster} {remembered.decode()}' from {known.path}",
        )
    return None
