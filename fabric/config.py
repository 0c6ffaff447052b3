"""Configuration: the SOIM_* variables every process reads, parsed and validated in one place.

Role: turn the environment (honcho reads `.env` into it) into a frozen `Config`; a bad value
raises `ConfigError`, whose message starts with the variable's name. A role reads its own
variables from `Config.extra` with `read_int` (nodes/<role>/options.py), the store its own with
`shard_store.settings`. No sockets.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fabric import timing

DISCOVERY_MODES = ("mdns", "seeds", "both")
MAX_SEEDS = 16
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,253}$")


class ConfigError(ValueError):
    """A SOIM_* variable has a bad value. `str()` names the variable first."""

    def __init__(self, var: str, problem: str) -> None:
        super().__init__(f"{var}: {problem}")
        self.var = var
        self.problem = problem


@dataclass(frozen=True)
class Config:
    """The validated settings of one process."""

    cluster: str = "soim"
    node_id: str = ""
    node_id_generated: bool = False
    """No SOIM_NODE_ID: the id has a random part, so no live node can hold it already."""
    host: str = "127.0.0.1"
    advertise_host: str = "127.0.0.1"
    discovery_ifaces: tuple[str, ...] = ("127.0.0.1",)
    discovery: str = "mdns"
    seeds: tuple[Seed, ...] = ()
    keys_dir: Path = Path("var/keys")
    node_key: str = "node"
    rpc_port: int = 0
    events_port: int = 0
    metrics_port: int = 0
    log_level: str = "INFO"
    log_format: str = "text"
    max_frame_bytes: int = timing.MAX_FRAME_BYTES
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, role: str = "") -> Config:
        """Read and validate every SOIM_* variable of `env` (default: os.environ)."""
        env = os.environ if env is None else env
        r = _Reader(env)
        cluster = r.name("SOIM_CLUSTER", "soim")
        default_id = f"{role or 'node'}-{socket.gethostname()[:20]}-{secrets.token_hex(3)}"
        node_id = r.name("SOIM_NODE_ID", default_id)
        host = r.host("SOIM_HOST", "127.0.0.1")
        advertise = r.host("SOIM_ADVERTISE_HOST", host if host not in ("0.0.0.0", "*") else "")
        if not advertise:
            raise ConfigError("SOIM_ADVERTISE_HOST", "required when SOIM_HOST binds all interfaces")
        ifaces = tuple(
            p.strip() for p in env.get("SOIM_DISCOVERY_IFACES", "127.0.0.1").split(",") if p.strip()
        )
        if not ifaces:
            raise ConfigError("SOIM_DISCOVERY_IFACES", "names no interface")
        seeds = _seeds(env.get("SOIM_SEEDS", ""))
        discovery = env.get("SOIM_DISCOVERY", "").strip() or ("both" if seeds else "mdns")
        if discovery not in DISCOVERY_MODES:
            raise ConfigError("SOIM_DISCOVERY", f"must be mdns, seeds or both, got {discovery!r}")
        if seeds and discovery == "mdns":
            raise ConfigError("SOIM_DISCOVERY", "is mdns, which ignores SOIM_SEEDS; use both")
        if discovery == "seeds" and not seeds:
            raise ConfigError("SOIM_SEEDS", "names no seed, and SOIM_DISCOVERY=seeds needs one")
        level = env.get("SOIM_LOG_LEVEL", "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("SOIM_LOG_LEVEL", f"must be DEBUG, INFO, WARNING or ERROR: {level!r}")
        log_format = env.get("SOIM_LOG_FORMAT", "").strip().lower() or "text"
        if log_format not in ("text", "json"):
            raise ConfigError("SOIM_LOG_FORMAT", f"must be text or json, got {log_format!r}")
        extra = {k: v for k, v in env.items() if k.startswith("SOIM_")}
        return cls(
            cluster=cluster,
            node_id=node_id,
            node_id_generated=not env.get("SOIM_NODE_ID"),
            host=host,
            advertise_host=advertise,
            discovery_ifaces=ifaces,
            discovery=discovery,
            seeds=seeds,
            keys_dir=Path(env.get("SOIM_KEYS_DIR", "var/keys")),
            node_key=r.name("SOIM_NODE_KEY", "node"),
            rpc_port=r.integer("SOIM_RPC_PORT", 0, 0, 65535),
            events_port=r.integer("SOIM_EVENTS_PORT", 0, 0, 65535),
            metrics_port=r.integer("SOIM_METRICS_PORT", 0, 0, 65535),
            log_level=level,
            log_format=log_format,
            max_frame_bytes=r.integer("SOIM_MAX_FRAME_BYTES", timing.MAX_FRAME_BYTES, 256, 1 << 24),
            extra=extra,
        )


@dataclass(frozen=True)
class Seed:
    """A node to dial at start: its RPC endpoint, and the name of its authorized key if given
    (`NAME@host:port`; without a name every authorized key is tried)."""

    host: str
    port: int
    key_name: str = ""

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def _seeds(raw: str) -> tuple[Seed, ...]:
    """SOIM_SEEDS: comma-separated `[NAME@]host:port`."""
    seeds = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        name, _, address = item.rpartition("@")
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        if (
            (name and not _NAME_RE.match(name))
            or not _HOST_RE.match(host)
            or not port.isdigit()
            or not 0 < int(port) < 65536
        ):
            raise ConfigError("SOIM_SEEDS", f"{item!r}: want [KEY_NAME@]host:port")
        seeds.append(Seed(host, int(port), name))
    if len(seeds) > MAX_SEEDS:
        raise ConfigError("SOIM_SEEDS", f"at most {MAX_SEEDS} seeds")
    return tuple(seeds)


class _Reader:
    """Typed getters that raise ConfigError naming the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def name(self, var: str, default: str) -> str:
        value = self.env.get(var, default).strip() or default
        if not _NAME_RE.match(value):
            raise ConfigError(var, f"must be 1-63 letters, digits, '_', '.' or '-': {value!r}")
        return value

    def host(self, var: str, default: str) -> str:
        value = self.env.get(var, default).strip()
        if value and not _HOST_RE.match(value):
            raise ConfigError(var, f"is not a host name or address: {value!r}")
        return value

    def integer(self, var: str, default: int, low: int, high: int) -> int:
        return read_int(self.env, var, default, low, high)


def read_int(env: Mapping[str, str], var: str, default: int, low: int, high: int) -> int:
    """An integer variable in [low, high] (`default` when unset or empty); roles read their
    own settings from `Config.extra` with it."""
    raw = env.get(var)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(var, f"must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(var, f"must be between {low} and {high}, got {value}")
    return value
