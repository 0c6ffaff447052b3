"""Curve key files and cluster secrets: generate them once, load them at start.

Role: the on-disk layout of a cluster's keys (ZeroMQ certificate files, z85 inside, and two
random secrets) and the only code that reads or writes it. No sockets; `fabric.security` puts
these keys on sockets.

Layout of the keys dir (`Config.keys_dir`, from SOIM_KEYS_DIR, default var/keys):

    node.key / node.key_secret         this host's node keypair: every node (and soimctl) started
                                       with this keys dir uses it, unless SOIM_NODE_KEY names
                                       another one
    nodes/NAME.key / NAME.key_secret   keypairs made by `soimctl keys add-node NAME`, to carry to
                                       another host (or to give one node a key of its own)
    authorized/NAME.key                the node public keys the cluster admits (ZAP); a node
                                       re-reads this folder every second, so removing a file
                                       (`soimctl keys revoke NAME`) cuts that key off at once
    gateway.key / gateway.key_secret   the client-plane server key; `soim` clients pin it
    cluster.secret                     signs discovery records (a record without a valid
                                       signature is never dialled)
    token.secret                       signs session tokens (directories)

Secret files are mode 0600. Files are written in a private temporary directory and renamed into
place, so a reader never sees half a key and a secret is never readable by others on the way.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from fabric.config import ConfigError

NODE = "node"
CLIENT_PLANE = "gateway"
"""The client plane's Curve server keypair (gateway.key): gateways serve `soim` with it."""
AUTHORIZED = "authorized"
NODES = "nodes"
CLUSTER_SECRET = "cluster.secret"
TOKEN_SECRET = "token.secret"
_PUBLIC = ".key"
_SECRET = ".key_secret"
_SECRET_BYTES = 32
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class KeysMissing(ConfigError):
    """The keys dir lacks a key (or holds a broken one). `str()` tells the operator what to run."""

    def __init__(self, keys_dir: Path, problem: str = "") -> None:
        detail = f" ({problem})" if problem else ""
        super().__init__(
            "SOIM_KEYS_DIR", f"no keys in {keys_dir}{detail}; run soimctl keys generate"
        )
        self.keys_dir = keys_dir


class KeysExist(ValueError):
    """`generate` found keys it would replace; `str()` says what replacing them would do."""

    def __init__(self, keys_dir: Path, found: list[Path]) -> None:
        names = ", ".join(str(p.relative_to(keys_dir)) for p in found)
        super().__init__(
            f"{keys_dir} already holds keys ({names}); replacing them cuts off every running "
            "node and client that uses them, until the new keys are copied to every host and "
            "clients trust the new gateway key. Keep them with --if-missing, or replace them "
            "with --force"
        )
        self.keys_dir = keys_dir
        self.found = found


class KeyNameError(ValueError):
    """`add-node` / `revoke` got a name that is not usable (taken, unknown, malformed)."""


@dataclass(frozen=True)
class KeyPair:
    """A Curve keypair, both halves z85-encoded (40 bytes each)."""

    public: bytes
    secret: bytes


def generate(keys_dir: Path, if_missing: bool = False, force: bool = False) -> list[Path]:
    """Write this host's node keypair, the gateway keypair, the two cluster secrets, and
    authorize the node key.

    With `if_missing`, what is readable is kept and only what is missing is written: a missing
    or unreadable secret key gets a new pair, a lost public half is derived from its secret.
    Otherwise existing keys raise KeysExist, unless `force` says to replace them.
    Returns the paths written, in order.
    """
    keys_dir = Path(keys_dir)
    found = [p for p in _generated_files(keys_dir) if p.exists()]
    if found and not (if_missing or force):
        raise KeysExist(keys_dir, found)
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(dir=keys_dir, prefix=".new-") as tmp:
        staging = Path(tmp)
        for name in (NODE, CLIENT_PLANE):
            written += _ensure_pair(keys_dir, staging, name, if_missing)
        for name in (CLUSTER_SECRET, TOKEN_SECRET):
            written += _ensure_secret(keys_dir, staging, name, if_missing)
        node_public = _load_public(keys_dir / (NODE + _PUBLIC), keys_dir)
        target = keys_dir / AUTHORIZED / (NODE + _PUBLIC)
        if not (if_missing and _readable_public(target) == node_public):
            written.append(_authorize(keys_dir, staging, NODE, keys_dir / (NODE + _PUBLIC)))
    return written


def _generated_files(keys_dir: Path) -> list[Path]:
    """Every file `generate` writes."""
    pairs = [keys_dir / (n + ext) for n in (NODE, CLIENT_PLANE) for ext in (_PUBLIC, _SECRET)]
    return [
        *pairs,
        keys_dir / CLUSTER_SECRET,
        keys_dir / TOKEN_SECRET,
        keys_dir / AUTHORIZED / (NODE + _PUBLIC),
    ]


def add_node(keys_dir: Path, name: str) -> list[Path]:
    """Make keypair `name` under nodes/ and authorize it; KeyNameError if the name is taken."""
    keys_dir = Path(keys_dir)
    if not _NAME_RE.match(name) or name == NODE:
        raise KeyNameError(f"{name!r}: use 1-63 letters, digits, '_', '.' or '-', not {NODE!r}")
    if (keys_dir / AUTHORIZED / (name + _PUBLIC)).exists():
        raise KeyNameError(f"{name!r} is already authorized; revoke it first to replace it")
    _load_public(keys_dir / AUTHORIZED / (NODE + _PUBLIC), keys_dir)  # a generated keys dir
    nodes = keys_dir / NODES
    nodes.mkdir(mode=0o700, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=keys_dir, prefix=".new-") as tmp:
        written = _ensure_pair(nodes, Path(tmp), name, if_missing=False)
        written.append(_authorize(keys_dir, Path(tmp), name, nodes / (name + _PUBLIC)))
    return written


def revoke(keys_dir: Path, name: str) -> list[Path]:
    """Stop admitting node key `name`: remove authorized/NAME.key and its nodes/ keypair.

    Every node reading this keys dir refuses the key within a second. KeyNameError for an
    unknown name, and for this host's own key (its nodes would refuse each other).
    """
    keys_dir = Path(keys_dir)
    if not _NAME_RE.match(name):
        raise KeyNameError(f"{name!r} is not a key name")
    if name == NODE:
        raise KeyNameError(
            f"{NODE!r} is the key of this keys dir's own nodes; "
            "generate a new one with soimctl keys generate instead"
        )
    target = keys_dir / AUTHORIZED / (name + _PUBLIC)
    if not target.exists():
        raise KeyNameError(f"no authorized key {name!r} in {keys_dir / AUTHORIZED}")
    removed = [target]
    target.unlink()
    for path in (keys_dir / NODES / (name + _PUBLIC), keys_dir / NODES / (name + _SECRET)):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def authorized(keys_dir: Path) -> dict[bytes, str]:
    """The admitted node keys: z85 public key -> name (the file's stem); KeysMissing if none."""
    keys_dir = Path(keys_dir)
    folder = keys_dir / AUTHORIZED
    found: dict[bytes, str] = {}
    try:
        paths = sorted(folder.glob("*" + _PUBLIC))
    except OSError as err:
        raise KeysMissing(keys_dir, f"{AUTHORIZED}/: {err}") from None
    for path in paths:
        public = _readable_public(path)
        if public is not None:
            found[public] = path.name[: -len(_PUBLIC)]
    if not found:
        raise KeysMissing(keys_dir, f"{AUTHORIZED}/ holds no public key")
    return found


def load_node(keys_dir: Path, name: str = NODE) -> KeyPair:
    """Node keypair `name` (`node`: this host's; another name: nodes/NAME); KeysMissing."""
    keys_dir = Path(keys_dir)
    if name == NODE:
        return _load_pair(keys_dir, NODE)
    try:
        return _load_pair(keys_dir / NODES, name)
    except KeysMissing as err:
        raise KeysMissing(keys_dir, f"key {name!r}: {err.problem}") from None


def load_client_plane(keys_dir: Path) -> KeyPair:
    """The client plane's server keypair; raises KeysMissing when absent or broken."""
    return _load_pair(Path(keys_dir), CLIENT_PLANE)


def load_client_plane_public(keys_dir: Path) -> bytes:
    """The client plane's public key alone, as a `soim` client on the same machine reads it."""
    keys_dir = Path(keys_dir)
    return _load_public(keys_dir / (CLIENT_PLANE + _PUBLIC), keys_dir)


def load_secret(keys_dir: Path, name: str) -> bytes:
    """The 32 random bytes of CLUSTER_SECRET or TOKEN_SECRET; KeysMissing when absent or bad."""
    keys_dir = Path(keys_dir)
    try:
        raw = (keys_dir / name).read_text(encoding="ascii").strip()
        secret = bytes.fromhex(raw)
    except (OSError, ValueError, UnicodeDecodeError):
        raise KeysMissing(keys_dir, f"{name} is missing or unreadable") from None
    if len(secret) != _SECRET_BYTES:
        raise KeysMissing(keys_dir, f"{name} must hold {_SECRET_BYTES} bytes in hex")
    return secret


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


def _ensure_secret(keys_dir: Path, staging: Path, name: str, if_missing: bool) -> list[Path]:
    """Write 32 random bytes (hex) to `name` unless `if_missing` and it is readable."""
    if if_missing:
        try:
            load_secret(keys_dir, name)
            return []
        except KeysMissing:
            pass
    staged = staging / name
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_hex(_SECRET_BYTES) + "\n")
    os.replace(staged, keys_dir / name)
    return [keys_dir / name]


def _authorize(keys_dir: Path, staging: Path, name: str, public_file: Path) -> Path:
    """Copy `public_file` to authorized/NAME.key (atomically); the path written."""
    folder = keys_dir / AUTHORIZED
    folder.mkdir(mode=0o755, exist_ok=True)
    staged = staging / f"{AUTHORIZED}-{name}{_PUBLIC}"
    shutil.copyfile(public_file, staged)
    target = folder / (name + _PUBLIC)
    os.replace(staged, target)
    return target


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
