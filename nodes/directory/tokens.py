"""Session tokens: signed, expiring, verifiable by every directory of the cluster.

Role: issue and verify the opaque token a client resumes with on any gateway. No sockets.

The signing key is derived from the keys dir's token.secret (fabric.keys; every directory host
holds the same file): blake2b(key=token secret, person=b"soim-token"), so every directory
verifies any directory's tokens. A token is url-safe base64 of

    version (1 byte, 1) | user_id (8, big-endian) | expires_ms (8) | nonce (8, random, top bit
    clear) | HMAC-SHA256 over the 25 bytes before it (32)

Anything else — bad base64, wrong length or version, a signature that does not match, an
expiry in the past — is TOKEN_INVALID, with one detail for all forgeries (a prober learns
nothing) and "expired" for a genuine old token.

A signature only says the directory once issued the token; whether it still works is the
`token` table's answer (nodes.directory.token_rows): each issued token has a (user_id, nonce)
row there, and works while that row is unclaimed: until a resume rotates it (then, for a short
reuse grace, it resumes only to the same successor), or logout, a password change, disable or
kick deletes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from fabric.methods import RpcError
from schema import common_pb2 as pb

VERSION = 1
_BODY = struct.Struct(">BQqQ")
NONCE_LIMIT = 2**63
"""Nonces are below this, so they fit a signed BIGINT column."""
_MAC_BYTES = 32
_TOKEN_BYTES = _BODY.size + _MAC_BYTES
_TOKEN_CHARS = (_TOKEN_BYTES + 2) // 3 * 4


def signing_key(token_secret: bytes) -> bytes:
    """The token key of a cluster, from its token.secret (32 bytes)."""
    return hashlib.blake2b(b"", key=token_secret, person=b"soim-token", digest_size=32).digest()


def now_ms() -> int:
    """Wall-clock milliseconds (tokens cross machines, so monotonic clocks will not do)."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Token:
    """A verified token's contents."""

    user_id: int
    expires_ms: int
    nonce: int


def new_nonce() -> int:
    """A random 63-bit token nonce."""
    return int.from_bytes(os.urandom(8), "big") % NONCE_LIMIT


class TokenSigner:
    """Issues and verifies tokens with one cluster key; `clock` is injectable for tests."""

    def __init__(self, key: bytes, ttl_s: int, clock: Callable[[], int] = now_ms) -> None:
        self._key = key
        self.ttl_ms = ttl_s * 1000
        self._clock = clock

    def issue(
        self, user_id: int, expires_ms: int | None = None, nonce: int | None = None
    ) -> tuple[str, int]:
        """A new token for `user_id` and its expiry (default: now + the TTL); `nonce` (default
        random) is what its `token` row is keyed by."""
        if expires_ms is None:
            expires_ms = self._clock() + self.ttl_ms
        body = _BODY.pack(VERSION, user_id, expires_ms, new_nonce() if nonce is None else nonce)
        mac = hmac.new(self._key, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(body + mac).decode("ascii"), expires_ms

    def verify(self, token: str) -> Token:
        """The token's user and expiry; RpcError(TOKEN_INVALID) if forged, broken or expired."""
        if len(token) != _TOKEN_CHARS:
            raise RpcError(pb.TOKEN_INVALID, "not a token")
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii"))
        except ValueError:
            raise RpcError(pb.TOKEN_INVALID, "not a token") from None
        body, mac = raw[: _BODY.size], raw[_BODY.size :]
        good = hmac.new(self._key, body, hashlib.sha256).digest()
        if len(raw) != _TOKEN_BYTES or not hmac.compare_digest(mac, good):
            raise RpcError(pb.TOKEN_INVALID, "not a token")
        version, user_id, expires_ms, nonce = _BODY.unpack(body)
        if version != VERSION or user_id == 0 or user_id >= NONCE_LIMIT or nonce >= NONCE_LIMIT:
            raise RpcError(pb.TOKEN_INVALID, "not a token")
        token_ = Token(user_id=user_id, expires_ms=expires_ms, nonce=nonce)
        if expires_ms <= self._clock():
            raise Expired(token_)
        return token_


class Expired(RpcError):
    """TOKEN_INVALID "expired": a genuine token past its expiry (`token` says whose)."""

    def __init__(self, token: Token) -> None:
        super().__init__(pb.TOKEN_INVALID, "expired")
        self.token = token
