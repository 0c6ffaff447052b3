"""Backend contract of the shard store: SOIM_DB parsing, the closed error set, and the two
interfaces (`Database`, `Conn`) that the MySQL and SQLite backends implement.

Role: say what a database and a pooled connection can do, so that every caller writes one SQL
text for both backends (`%s` placeholders, backtick-quoted names). No connections of its own:
`shard_store.mysql` and `shard_store.sqlite` own them; `open_database` picks one.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from shard_store.settings import SettingError

Params = Sequence[Any] | None
"""Statement parameters; None sends the SQL text as it is (no `%` formatting)."""

Statement = tuple[str, Params]

Column = tuple[str, str, str | None]
"""(name, kind, default SQL or None); kinds: id, int, name, tag, hash, text (see COLUMN_KINDS)."""

COLUMN_KINDS = ("id", "int", "name", "tag", "hash", "text")
"""id: 64-bit integer; int: 32-bit; name: up to 64 chars; tag: up to 16 chars; hash: up to 255
chars; text: up to 4,000 chars (message bodies). Strings compare by code point on both backends."""

_DB_NAME_RE = re.compile(r"^[A-Za-z0-9_$]{1,64}$")


class StoreError(Exception):
    """Any shard store failure; `str()` is one line fit to print."""


class StoreUnavailable(StoreError):
    """The database is down, unreachable or refused us; the message names SOIM_DB."""

    var = "SOIM_DB"


class Conflict(StoreError):
    """A write hit a primary or unique key that is already taken."""


class FlushFailed(StoreError):
    """A batch writer flush failed as a whole: nothing of it was acknowledged; retry it."""


class SeqClash(StoreError):
    """(conv_id, seq) is already taken by a different message; never ack this one."""

    def __init__(self, conv_id: int, seq: int) -> None:
        super().__init__(f"seq {seq} of conversation {conv_id} is taken by another message")
        self.conv_id = conv_id
        self.seq = seq


class WriterClosed(StoreError):
    """The batch writer is closed (or gave up at its shutdown deadline)."""


@dataclass(frozen=True)
class DbSpec:
    """One database named by SOIM_DB: a MySQL server database or an SQLite folder."""

    kind: str  # "mysql" or "sqlite"
    host: str = ""
    port: int = 3306
    user: str = ""
    password: str = ""
    database: str = ""
    path: str = ""

    @property
    def display(self) -> str:
        """The URL with the password masked, for messages and `soimctl shards`."""
        if self.kind == "sqlite":
            return f"sqlite:{self.path}"
        auth = self.user + (":***" if self.password else "")
        return f"mysql://{auth}@{self.host}:{self.port}/{self.database}"


def parse_db_urls(value: str) -> list[DbSpec]:
    """Parse SOIM_DB: `sqlite:FOLDER` or a comma list of `mysql://user:pass@host:port/db`."""
    value = value.strip()
    if value.startswith("sqlite:"):
        path = value[len("sqlite:") :].strip()
        if not path or "," in path:
            raise SettingError("SOIM_DB", f"sqlite: needs one folder, got {value!r}")
        return [DbSpec(kind="sqlite", path=path)]
    specs = [_parse_mysql(part.strip()) for part in value.split(",")]
    seen = {(s.host, s.port, s.database) for s in specs}
    if len(seen) != len(specs):
        raise SettingError("SOIM_DB", "lists the same database twice")
    return specs


def _parse_mysql(url: str) -> DbSpec:
    if not url.startswith("mysql://"):
        raise SettingError("SOIM_DB", f"each entry must be a mysql:// URL, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port or 3306
    except ValueError as err:
        raise SettingError("SOIM_DB", f"malformed URL {url!r}: {err}") from None
    if not parts.hostname or not parts.username:
        raise SettingError("SOIM_DB", f"needs mysql://user[:password]@host[:port]/db, got {url!r}")
    if parts.query or parts.fragment:
        raise SettingError("SOIM_DB", f"takes no ?options or #fragment: {url!r}")
    database = parts.path.lstrip("/")
    if not _DB_NAME_RE.match(database):
        raise SettingError("SOIM_DB", f"database name must be letters, digits, _ or $: {url!r}")
    return DbSpec(
        kind="mysql",
        host=parts.hostname,
        port=port,
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        database=database,
    )


class Conn(ABC):
    """One pooled connection, used by one thread at a time, in autocommit mode.

    SQL uses `%s` placeholders (and `%%` for a literal `%` when params are given) on both
    backends. Backend exceptions come out as `Conflict`, `StoreUnavailable` or `StoreError`.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.broken = False

    @abstractmethod
    def execute(self, sql: str, params: Params = None) -> int:
        """Run one statement; return the affected row count."""

    @abstractmethod
    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Run one SELECT; return all rows."""

    @abstractmethod
    def begin(self) -> None:
        """Open an explicit transaction (SQLite takes the write lock at once)."""

    @abstractmethod
    def commit(self) -> None:
        """Commit the open transaction."""

    @abstractmethod
    def rollback(self) -> None:
        """Roll back the open transaction; never raises for a connection already lost."""

    @abstractmethod
    def close(self) -> None:
        """Give the connection back to its pool (or drop it when `broken`)."""

    def write_batch(self, statements: Sequence[Statement]) -> list[int]:
        """Run `statements` as one transaction and commit; return each one's affected rows.

        On any error the transaction is rolled back and the error raised: all or nothing.
        """
        self.begin()
        try:
            counts = [self.execute(sql, params) for sql, params in statements]
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return counts

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        """`with conn.transaction():` commits on success, rolls back on any exception."""
        self.begin()
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def __enter__(self) -> Conn:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Database(ABC):
    """One database of SOIM_DB with its connection pool. `index` is its place in the list."""

    kind = ""
    insert_ignore = ""
    """The statement head that skips rows whose keys are taken (`INSERT IGNORE` / `OR IGNORE`)."""

    def __init__(self, spec: DbSpec, index: int) -> None:
        self.spec = spec
        self.index = index

    @abstractmethod
    def connection(self, batch: bool = False) -> Conn:
        """A connection from the pool; close it (or use `with`) to give it back.

        `batch=True`: one whose `write_batch` takes a single round trip (MySQL: from a small
        second pool of multi-statement connections, kept apart from ordinary queries).
        """

    @abstractmethod
    def interrupt(self, conn: Conn) -> None:
        """Abort what `conn` is doing from another thread and fail whatever it does next
        (MySQL: KILL CONNECTION; SQLite: interrupt the running statement, refuse later ones)."""

    @abstractmethod
    def close(self) -> None:
        """Close the pool; connections still lent out are closed when given back."""

    @abstractmethod
    def server_version(self) -> str:
        """The server (or library) version, for benchmarks and `soimctl shards`."""

    @abstractmethod
    def table_names(self, conn: Conn) -> list[str]:
        """Every table of this database."""

    @abstractmethod
    def create_table_sql(
        self,
        name: str,
        columns: Sequence[Column],
        primary: Sequence[str],
        unique: Sequence[Sequence[str]],
        index: Sequence[Sequence[str]],
    ) -> list[str]:
        """Idempotent DDL (CREATE … IF NOT EXISTS) for one physical table."""

    @abstractmethod
    def add_column(self, conn: Conn, name: str, column: Column) -> None:
        """Add `column` to physical table `name` unless it has it (ALTER TABLE … ADD COLUMN)."""

    @abstractmethod
    def schema_lock(self, conn: Conn) -> AbstractContextManager[None]:
        """Serialise migrations across processes (MySQL GET_LOCK, SQLite write transaction)."""

    @abstractmethod
    def insert_statements(
        self,
        table: str,
        columns: Sequence[str],
        kinds: str,
        rows: Sequence[Sequence[Any]],
        ignore: bool = True,
    ) -> list[Statement]:
        """Multi-row INSERT (IGNORE) of `rows`; kinds has `i` (int) or `s` (str) per column."""

    @abstractmethod
    def select_in_statements(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        kinds: str,
        keys: Sequence[Sequence[Any]],
    ) -> list[Statement]:
        """SELECT `columns` WHERE (key…) IN (keys…)."""


def open_database(
    spec: DbSpec, index: int, *, pool_size: int = 8, busy_timeout_s: float = 10.0
) -> Database:
    """Open one database of SOIM_DB; raises StoreUnavailable (one line) if it cannot."""
    if spec.kind == "mysql":
        from shard_store.mysql import MySQLDatabase

        return MySQLDatabase(spec, index, pool_size=pool_size)
    from shard_store.sqlite import SQLiteDatabase

    return SQLiteDatabase(spec, index, pool_size=pool_size, busy_timeout_s=busy_timeout_s)
