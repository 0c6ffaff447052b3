"""Password hashing: salted scrypt, stored with its parameters, checked in constant time.

Role: turn a password into the string kept in the user table and check a password against it.
Pure CPU (hashlib.scrypt releases the GIL), no sockets: callers run these in a thread pool,
never on the event loop.

Parameters follow the OWASP Password Storage Cheat Sheet (scrypt: "a minimum CPU/memory cost
parameter of (2^17), a minimum block size of 8 (1024 bytes), and a parallelization parameter
of 1"): N = 2**17, r = 8, p = 1, which takes 128 MiB and about 0.45 s of one core here. A
16-byte random salt per hash (os.urandom), a 32-byte key. SOIM_SCRYPT_N lowers N for tests;
each stored hash names its own N, r and p, so raising the cost later keeps old hashes valid.

Stored form (at most ~100 ASCII characters): `scrypt$N$r$p$<salt base64>$<key base64>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SCRYPT_N = 2**17
"""CPU/memory cost (OWASP minimum)."""
SCRYPT_R = 8
"""Block size: 8 x 128 bytes."""
SCRYPT_P = 1
"""Parallelisation."""
SALT_BYTES = 16
KEY_BYTES = 32
_SCHEME = "scrypt"
_MAX_N = 2**20


def maxmem(n: int, r: int, p: int) -> int:
    """The memory scrypt needs at these parameters (OpenSSL's own estimate), plus slack."""
    return 128 * r * (n + p + 2) + (1 << 20)


def derive(password: str, salt: bytes, n: int, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    """The raw scrypt key of `password` (UTF-8) with `salt`."""
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem(n, r, p), dklen=KEY_BYTES
    )


def hash_password(password: str, n: int = SCRYPT_N) -> str:
    """A new stored hash of `password`, with a fresh random salt."""
    salt = os.urandom(SALT_BYTES)
    key = derive(password, salt, n)
    return "$".join((_SCHEME, str(n), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(key)))


def check_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (constant-time compare); False for a broken hash."""
    try:
        scheme, n_s, r_s, p_s, salt_s, key_s = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, key = _unb64(salt_s), _unb64(key_s)
    except ValueError:
        return False
    if scheme != _SCHEME or not (1 < n <= _MAX_N and 0 < r <= 32 and 0 < p <= 16):
        return False
    return hmac.compare_digest(derive(password, salt, n, r, p), key)


def burn(password: str, n: int = SCRYPT_N) -> None:
    """Spend the time of one check, for an unknown account: timing tells nothing."""
    derive(password, b"\0" * SALT_BYTES, n)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
