"""The store's settings: the SOIM_* variables that say where the data lives and how it is written.

Role: read and validate them once from an environment mapping (a node passes its
`Config.extra`, a tool `os.environ`); a bad value raises `SettingError`, whose message starts
with the variable's name. Storage and directory nodes read them; so do soimctl's store commands
and the benchmarks. No sockets.

    SOIM_DB               sqlite:FOLDER, or a comma list of mysql://user[:password]@host[:port]/db
                          (default sqlite:var/data)
    SOIM_SHARDS           tables per logical table in each database, a power of two (default 8)
    SOIM_REDIS_URL        the directories' shared cache (redis://, rediss:// or unix://; unset:
                          in-process caches only)
    SOIM_REDIS_PREFIX     prefix of every Redis key (default soim:)
    SOIM_BATCH_ROWS       rows a storage node's writer commits in one flush at most (default 512)
    SOIM_BATCH_MS         how long a sealed batch may wait for more rows while a commit runs
                          (default 5)
    SOIM_BATCH_LINGER_MS  how long an idle writer under a steady load lets rows gather before
                          it flushes them (default 1; 0: it flushes at once)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class SettingError(ValueError):
    """A store variable has a bad value (or names a database the store cannot use as it is).
    `str()` names the variable first; `var` and `problem` hold the two parts."""

    def __init__(self, var: str, problem: str) -> None:
        super().__init__(f"{var}: {problem}")
        self.var = var
        self.problem = problem


@dataclass(frozen=True)
class StoreSettings:
    """The validated store settings of one process."""

    db: str = "sqlite:var/data"
    shards: int = 8
    redis_url: str = ""
    redis_prefix: str = "soim:"
    batch_rows: int = 512
    batch_ms: int = 5
    batch_linger_ms: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StoreSettings:
        """Read and validate the store's variables of `env` (default: os.environ)."""
        env = os.environ if env is None else env
        shards = _integer(env, "SOIM_SHARDS", 8, 1, 1024)
        if shards & (shards - 1):
            raise SettingError("SOIM_SHARDS", f"must be a power of two, got {shards}")
        db = env.get("SOIM_DB", "sqlite:var/data").strip()
        if not (db.startswith("sqlite:") or db.startswith("mysql://")):
            raise SettingError("SOIM_DB", f"must start with sqlite: or mysql://, got {db!r}")
        redis_url = env.get("SOIM_REDIS_URL", "").strip()
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingError("SOIM_REDIS_URL", f"must be a redis:// URL, got {redis_url!r}")
        return cls(
            db=db,
            shards=shards,
            redis_url=redis_url,
            redis_prefix=env.get("SOIM_REDIS_PREFIX", "soim:"),
            batch_rows=_integer(env, "SOIM_BATCH_ROWS", 512, 1, 100_000),
            batch_ms=_integer(env, "SOIM_BATCH_MS", 5, 0, 10_000),
            batch_linger_ms=_integer(env, "SOIM_BATCH_LINGER_MS", 1, 0, 100),
        )


def _integer(env: Mapping[str, str], var: str, default: int, low: int, high: int) -> int:
    raw = env.get(var)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(var, f"must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingError(var, f"must be between {low} and {high}, got {value}")
    return value
