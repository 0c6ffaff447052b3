"""The directory's own settings: the SOIM_* variables only a directory reads.

Role: parse and validate them from `Config.extra` (which holds every SOIM_* variable) at start;
a bad value raises `fabric.config.ConfigError` naming the variable, which `fabric.node.main`
prints as one line. No sockets.

    SOIM_SCRYPT_N          scrypt CPU/memory cost for new password hashes, a power of two
                           2**10..2**20 (default 2**17, see nodes.directory.passwords); tests
                           lower it to stay fast. Stored hashes keep the cost they were made with.
    SOIM_TOKEN_TTL_S       lifetime of a session token in seconds, 60..30 days (default 1 day)
    SOIM_TOKEN_REUSE_GRACE_S  seconds after a resume during which the old token resumes
                           again, to the same new token (a resume whose reply was lost);
                           0..300, default 30; 0: strictly single use (nodes.directory.token_rows)
    SOIM_REGISTER_PER_MIN  accounts one client address may register per minute; 0 (default)
                           means no limit — gateways already rate-limit each session
    SOIM_KDF_PER_ADDR      password hashes one client address may have waiting or running at
                           once (default 2, see fabric.timing.KDF_JOBS_PER_ADDRESS); raise it
                           for load tests that log in many users from one machine
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fabric import timing
from fabric.config import ConfigError, read_int
from nodes.directory import passwords

TOKEN_TTL_DEFAULT_S = 24 * 3600
TOKEN_TTL_MIN_S, TOKEN_TTL_MAX_S = 60, 30 * 24 * 3600
TOKEN_REUSE_GRACE_DEFAULT_S, TOKEN_REUSE_GRACE_MAX_S = 30, 300


@dataclass(frozen=True)
class DirectoryOptions:
    """Validated directory settings."""

    scrypt_n: int = passwords.SCRYPT_N
    token_ttl_s: int = TOKEN_TTL_DEFAULT_S
    token_reuse_grace_s: int = TOKEN_REUSE_GRACE_DEFAULT_S
    register_per_min: int = 0
    kdf_per_addr: int = timing.KDF_JOBS_PER_ADDRESS

    @classmethod
    def from_extra(cls, extra: Mapping[str, str]) -> DirectoryOptions:
        """Read the directory's variables from `Config.extra`."""
        scrypt_n = read_int(extra, "SOIM_SCRYPT_N", passwords.SCRYPT_N, 2**10, 2**20)
        if scrypt_n & (scrypt_n - 1):
            raise ConfigError("SOIM_SCRYPT_N", f"must be a power of two, got {scrypt_n}")
        return cls(
            scrypt_n=scrypt_n,
            token_ttl_s=read_int(
                extra, "SOIM_TOKEN_TTL_S", TOKEN_TTL_DEFAULT_S, TOKEN_TTL_MIN_S, TOKEN_TTL_MAX_S
            ),
            token_reuse_grace_s=read_int(
                extra,
                "SOIM_TOKEN_REUSE_GRACE_S",
                TOKEN_REUSE_GRACE_DEFAULT_S,
                0,
                TOKEN_REUSE_GRACE_MAX_S,
            ),
            register_per_min=read_int(extra, "SOIM_REGISTER_PER_MIN", 0, 0, 1_000_000),
            kdf_per_addr=read_int(
                extra, "SOIM_KDF_PER_ADDR", timing.KDF_JOBS_PER_ADDRESS, 1, 100_000
            ),
        )
