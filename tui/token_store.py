"""The remembered logins of `soim`: one resume token per cluster and account.

Role: keep the token of the last login or resume (it rotates at every resume) so the next start
of `soim` resumes the session without a password. The file is `sessions.json` in the user's
soim config dir (`$XDG_CONFIG_HOME/soim`, default `~/.config/soim`, next to `known_gateways`),
mode 0600 in a 0700 directory, written whole to a temporary file and renamed (a crash leaves
the old or the new file, never half of one), under an exclusive lock so two clients of one user
never lose each other's tokens. A token belongs to the one running client that holds its
account's claim (`claim`: an flock on a file in `.session-locks/`, let go when the process ends):
a second `soim` of the same user neither resumes it (the resume would spend the first one's token,
ending its session) nor overwrites it. A cluster is named by the fingerprint of its gateway key (the
key the client pinned), so two clusters that happen to share a name never share a token.
Layout: {"clusters": {FINGERPRINT: {"last": ACCOUNT, "tokens": {ACCOUNT: TOKEN}}}}.
No sockets: files only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILE_NAME = "sessions.json"
MAX_BYTES = 1 << 20
"""A bigger file is not ours to parse (a token is a few hundred bytes)."""


class TokenStoreError(Exception):
    """The sessions file cannot be read or written; `str()` names the file."""


class TokenStore:
    """Remembered resume tokens, by cluster (gateway key fingerprint) and account."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._claims: dict[tuple[str, str], int] = {}  # (cluster, account) -> locked fd

    def claim(self, cluster: str, account: str) -> bool:
        """Hold `account`'s remembered login for this process; False if another one holds it."""
        if (cluster, account) in self._claims:
            return True
        name = hashlib.sha256(f"{cluster} {account}".encode()).hexdigest()[:24]
        folder = self.path.with_name(".session-locks")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise TokenStoreError(f"cannot write {folder}: {err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._claims[(cluster, account)] = fd
        return True

    def release_others(self, cluster: str, account: str) -> None:
        """Let go of every claim of `cluster` but `account`'s (this client switched account)."""
        for key in [k for k in self._claims if k[0] == cluster and k[1] != account]:
            os.close(self._claims.pop(key))

    def lookup(self, cluster: str, account: str = "") -> tuple[str, str] | None:
        """(account, token) for `account`, or for the cluster's last used account if empty."""
        entry = self._read().get(cluster, {})
        account = account or str(entry.get("last", ""))
        token = entry.get("tokens", {}).get(account)
        return (account, token) if isinstance(token, str) and token else None

    def save(self, cluster: str, account: str, token: str) -> None:
        """Remember `token` for `account` (and make it the cluster's last used account); an
        empty token forgets the account."""
        with self._locked():
            data = self._read()
            entry = data.setdefault(cluster, {"last": "", "tokens": {}})
            if token:
                entry["tokens"][account] = token
                entry["last"] = account
            else:
                entry["tokens"].pop(account, None)
                if entry.get("last") == account:
                    entry["last"] = next(iter(entry["tokens"]), "")
                if not entry["tokens"]:
                    del data[cluster]
            self._write(data)

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as file:
                raw = file.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise TokenStoreError(f"cannot read {self.path}: {err}") from None
        try:
            clusters = json.loads(raw)["clusters"] if len(raw) <= MAX_BYTES else None
        except (ValueError, KeyError, TypeError):
            clusters = None
        if not isinstance(clusters, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("tokens"), dict) for e in clusters.values()
        ):
            raise TokenStoreError(
                f"{self.path} is not a soim sessions file; delete it (every "
                "remembered login is then forgotten)"
            )
        return clusters

    def _write(self, clusters: dict[str, Any]) -> None:
        temporary = self.path.with_name(f".{FILE_NAME}.{os.getpid()}")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump({"clusters": clusters}, file, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise TokenStoreError(f"cannot write {self.path}: {err}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path.with_name(f".{FILE_NAME}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise TokenStoreError(f"cannot write {self.path}: {err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
