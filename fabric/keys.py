"""Curve key files: generate them once, load them at start.

Role: the on-disk layout of a cluster's Curve keys (ZeroMQ certificate files, z85 inside) and
the only code that reads or writes it. No sockets; `fabric.security` puts these keys on them.

Layout of the keys dir (`Config.keys_dir`, from SOIM_KEYS_DIR, default var/keys):

    cluster.key / cluster.key_secret   the keypair every node of the cluster uses, for its server
                                       sockets (RPC ROUTER, events PUB) and as a client of peers
    gateway.key / gateway.key_secret   the client-plane server key; `soim` clients check it
    authorized/cluster.key             public keys a node admits on its cluster sockets (ZAP)

Secret files are mode 0600. Files are written in a private temporary directory and renamed into
place, so a reader never sees half a key and a secret is never readable by others on the way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from fabric.config import ConfigError

CLUSTER = "cluster"
GATEWAY = "gateway"
AUTHORIZED = "authorized"
_PUBLIC = ".key"
_SECRET = ".key_secret"


class KeysMissing(ConfigError):
    """The keys dir lacks a key (or holds a broken one). `str()` tells the operator what to run."""

    def __init__(self, keys_dir: Path, problem: str = "") -> None:
        detail = f" ({problem})" if problem else ""
        super().__init__("SOIM_KEYS_DIR",
                         f"no keys in {keys_dir}{detail}; run soimctl keys generate")
        self.keys_dir = keys_dir


@dataclass(frozen=True)
class KeyPair:
    """A Curve keypair, both halves z85-encoded (40 bytes each)."""

    public: bytes
    secret: bytes


def generate(keys_dir: Path, if_missing: bool = False) -> list[Path]:
    """Write the cluster and gateway keypairs and authorize the cluster key.

    With `if_missing`, a readable pair is kept and only what is missing is written: a missing or
    unreadable secret gets a new pair, a lost public half is derived from its secret. Returns the
    paths written, in order.
    """
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(dir=keys_dir, prefix=".new-") as tmp:
        staging = Path(tmp)
        for name in (CLUSTER, GATEWAY):
            written += _ensure_pair(keys_dir, staging, name, if_missing)
        authorized = keys_dir / AUTHORIZED
        authorized.mkdir(mode=0o755, exist_ok=True)
        target = authorized / (CLUSTER + _PUBLIC)
        cluster_public = _load_public(keys_dir / (CLUSTER + _PUBLIC), keys_dir)
        if not (if_missing and _readable_public(target) == cluster_public):
            staged = staging / f"{AUTHORIZED}-{CLUSTER}{_PUBLIC}"
            shutil.copyfile(keys_dir / (CLUSTER + _PUBLIC), staged)
            os.replace(staged, target)
            written.append(target)
    return written


def load_cluster(keys_dir: Path) -> KeyPair:
    """The cluster keypair; raises KeysMissing when it is absent or broken."""
    return _load_pair(Path(keys_dir), CLUSTER)


def load_gateway(keys_dir: Path) -> KeyPair:
    """The gateway (client-plane server) keypair; raises KeysMissing when absent or broken."""
    return _load_pair(Path(keys_dir), GATEWAY)


def load_gateway_public(keys_dir: Path) -> bytes:
    """The gateway public key alone, as a `soim` client on the same machine reads it."""
    keys_dir = Path(keys_dir)
    return _load_public(keys_dir / (GATEWAY + _PUBLIC), keys_dir)


def _ensure_pair(keys_dir: Path, staging: Path, name: str, if_missing: bool) -> list[Path]:
    """Write keypair `name` unless `if_missing` and it is already whole; return paths written."""
    public_path, secret_path = keys_dir / (name + _PUBLIC), keys_dir / (name + _SECRET)
    if if_missing:
        try:
            pair = _load_pair(keys_dir, name, need_public=False)
        except KeysMissing:
            pair = None  # absent or unreadable: make a new pair below
        if pair is not None and _readable_public(public_path) == pair.public:
            return []
        if pair is not None:
            staged = staging / (name + _PUBLIC)
            staged.write_text(_public_file_text(pair.public), encoding="ascii")
            os.replace(staged, public_path)
            return [public_path]
    staged_public, staged_secret = (Path(p) for p in zmq.auth.create_certificates(staging, name))
    staged_secret.chmod(0o600)
    os.replace(staged_secret, secret_path)
    os.replace(staged_public, public_path)
    return [public_path, secret_path]


def _load_pair(keys_dir: Path, name: str, need_public: bool = True) -> KeyPair:
    """Read `name.key_secret`; check it against `name.key` unless `need_public` is False."""
    secret_path = keys_dir / (name + _SECRET)
    try:
        public, secret = zmq.auth.load_certificate(secret_path)
    except OSError:
        raise KeysMissing(keys_dir) from None
    except ValueError as err:
        raise KeysMissing(keys_dir, str(err)) from None
    if secret is None:
        raise KeysMissing(keys_dir, f"{secret_path.name} holds no secret key")
    try:
        derived = zmq.curve_public(secret)
    except (ValueError, zmq.ZMQError):
        raise KeysMissing(keys_dir, f"{secret_path.name}: not a z85 Curve key") from None
    if derived != public:
        raise KeysMissing(keys_dir, f"{secret_path.name}: public and secret keys do not match")
    if need_public and _load_public(keys_dir / (name + _PUBLIC), keys_dir) != public:
        raise KeysMissing(keys_dir, f"{name}{_PUBLIC} does not match {secret_path.name}")
    return KeyPair(public=public, secret=secret)


def _load_public(path: Path, keys_dir: Path) -> bytes:
    """The public key in certificate file `path`; raises KeysMissing."""
    if not path.exists():
        raise KeysMissing(keys_dir)
    public = _readable_public(path)
    if public is None:
        raise KeysMissing(keys_dir, f"{path.name} holds no valid public key")
    return public


def _readable_public(path: Path) -> bytes | None:
    """The public key in `path`, or None when the file is absent or holds no 40-byte z85 key."""
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError):
        return None
    return public if len(public) == 40 else None


def _public_file_text(public: bytes) -> str:
    """A certificate file holding only `public`, in the format zmq.auth writes and reads."""
    return (
        "#   ****  Generated by soimctl keys generate  ****\n"
        "#   ZeroMQ CURVE Public Certificate\n"
        "metadata\n"
        "curve\n"
        f'    public-key = "{public.decode("ascii")}"\n'
    )
