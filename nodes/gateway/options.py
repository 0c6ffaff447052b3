"""The gateway's own settings: the SOIM_* variables only a gateway reads.

Role: parse and validate them from `Config.extra` at start; a bad value raises
`fabric.config.ConfigError` naming the variable. No sockets.

    SOIM_GATEWAY_PORT             port of the client plane's ROUTER, where `soim` clients
                                  connect (default 7000; 0: any free port)
    SOIM_AUTH_DEADLINE_S          seconds a client connection may stay without a session before
                                  the gateway closes it (default 10)
    SOIM_MAX_UNAUTH_PER_ADDR      connections without a session one IP address may hold; the
                                  next one is closed at once (default 64)
    SOIM_MAX_UNAUTH_TOTAL         connections without a session in all (default 4096)
    SOIM_MAX_SESSIONS_PER_USER    sessions one user may hold on a gateway; a login past it is
                                  refused with RATE_LIMITED (default 10)
    SOIM_AUTH_PER_ADDR_PER_S      Register/Login/Resume requests one IP address may make per
                                  second over all its connections, with a burst of 10 s worth
                                  (default 10; each connection alone: 1/s, burst 5)
    SOIM_RESUME_PER_ADDR_PER_S    the same for Resume, which costs no password hash and comes in
                                  crowds after a gateway dies (default 100)
    SOIM_SESSION_RATE             requests per second one user may make after login, over all
                                  its sessions on this gateway (one token bucket per user,
                                  default 50); past it: RATE_LIMITED
    SOIM_SESSION_BURST            requests that user may make at once before the rate applies
                                  (the bucket's size, default 200)
    SOIM_CLIENT_QUEUE_BYTES       bytes of replies and pushes a logged-in client may leave
                                  unread (queued in the gateway and its kernel); past it the
                                  session ends and the connection is reset (default 4 MiB, at
                                  least 2 MiB: one History page can take 1.6 MB); on the
                                  WebSocket plane: bytes in the connection's write buffer
    SOIM_TOKEN_AUDIT_S            seconds between two checks of every session's token with a
                                  directory, the backstop for a lost SessionsEnd event
                                  (default 5)
    SOIM_WEB_PORT                 port of the WebSocket plane and the web client (HTTP on the
                                  gateway's SOIM_HOST; 0: any free port; unset or empty: off)
    SOIM_WEB_CERT, SOIM_WEB_KEY   PEM certificate chain and private key: serve https and wss
                                  (both or neither; unset: plain http and ws)
    SOIM_WEB_ORIGINS              comma-separated origins (scheme://host[:port]) whose pages may
                                  open a WebSocket; unset: this gateway's own and the web origins
                                  of the gateways seen alive, also after they died (requests
                                  without Origin always may)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fabric import timing
from fabric.config import ConfigError, read_int

_ORIGIN_RE = re.compile(
    r"^https?://[A-Za-z0-9_.-]{1,253}(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:]+\](:[0-9]{1,5})?$"
)
MAX_SESSION_RATE = 1_000_000
"""Highest SOIM_SESSION_RATE and SOIM_SESSION_BURST (a load test lifts the limit with it)."""


@dataclass(frozen=True)
class GatewayOptions:
    """Validated gateway settings."""

    client_port: int = 7000
    auth_deadline_s: int = 10
    max_unauth_per_addr: int = 64
    max_unauth_total: int = 4096
    max_sessions_per_user: int = 10
    auth_per_addr_per_s: int = 10
    resume_per_addr_per_s: int = 100
    client_queue_bytes: int = 4 << 20
    session_rate: int = int(timing.SESSION_RATE_PER_S)
    session_burst: int = int(timing.SESSION_RATE_BURST)
    token_audit_s: int = int(timing.REVOCATION_AUDIT_INTERVAL_S)
    rebalance_grace_s: int = int(timing.REBALANCE_GRACE_S)
    """How long another gateway must have been up before sessions are moved to it."""
    web_port: int | None = None
    """None: no WebSocket plane."""
    web_cert: str = ""
    web_key: str = ""
    web_origins: tuple[str, ...] = ()
    """Empty: the live gateways' own web origins."""

    @classmethod
    def from_extra(cls, extra: Mapping[str, str]) -> GatewayOptions:
        """Read the gateway's variables from `Config.extra`."""
        return cls(
            client_port=read_int(extra, "SOIM_GATEWAY_PORT", 7000, 0, 65535),
            auth_deadline_s=read_int(extra, "SOIM_AUTH_DEADLINE_S", 10, 1, 3600),
            max_unauth_per_addr=read_int(extra, "SOIM_MAX_UNAUTH_PER_ADDR", 64, 1, 1_000_000),
            max_unauth_total=read_int(extra, "SOIM_MAX_UNAUTH_TOTAL", 4096, 1, 1_000_000),
            max_sessions_per_user=read_int(extra, "SOIM_MAX_SESSIONS_PER_USER", 10, 1, 10_000),
            auth_per_addr_per_s=read_int(extra, "SOIM_AUTH_PER_ADDR_PER_S", 10, 1, 1_000_000),
            resume_per_addr_per_s=read_int(extra, "SOIM_RESUME_PER_ADDR_PER_S", 100, 1, 1_000_000),
            client_queue_bytes=read_int(
                extra, "SOIM_CLIENT_QUEUE_BYTES", 4 << 20, 2 << 20, 1 << 34
            ),
            session_rate=read_int(
                extra, "SOIM_SESSION_RATE", cls.session_rate, 1, MAX_SESSION_RATE
            ),
            session_burst=read_int(
                extra, "SOIM_SESSION_BURST", cls.session_burst, 1, MAX_SESSION_RATE
            ),
            token_audit_s=read_int(extra, "SOIM_TOKEN_AUDIT_S", cls.token_audit_s, 1, 86_400),
            rebalance_grace_s=read_int(
                extra, "SOIM_REBALANCE_GRACE_S", cls.rebalance_grace_s, 0, 86_400
            ),
            web_port=_web_port(extra),
            web_cert=_pem_file(extra, "SOIM_WEB_CERT"),
            web_key=_pem_file(extra, "SOIM_WEB_KEY"),
            web_origins=_origins(extra.get("SOIM_WEB_ORIGINS", "")),
        ).checked()

    def checked(self) -> GatewayOptions:
        """These options, if their combination is valid."""
        if bool(self.web_cert) != bool(self.web_key):
            raise ConfigError("SOIM_WEB_CERT", "SOIM_WEB_CERT and SOIM_WEB_KEY go together")
        return self


def _web_port(extra: Mapping[str, str]) -> int | None:
    if extra.get("SOIM_WEB_PORT", "").strip() == "":
        return None
    return read_int(extra, "SOIM_WEB_PORT", 0, 0, 65535)


def _pem_file(extra: Mapping[str, str], var: str) -> str:
    path = extra.get(var, "").strip()
    if path and not Path(path).is_file():
        raise ConfigError(var, f"no such file: {path!r}")
    return path


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if not _ORIGIN_RE.match(origin):
            raise ConfigError(
                "SOIM_WEB_ORIGINS", f"{origin[:80]!r} is not an origin like https://host:port"
            )
    return origins
