"""MySQL/MariaDB backend: one DBUtils `PooledDB` of PyMySQL connections per database.

Role: implement `Database`/`Conn` for a `mysql://` entry of SOIM_DB, and build multi-row
statements as SQL text from pre-escaped literals with one format per row (executemany and
PyMySQL's per-argument escaping are several times slower). Its sockets: TCP connections to the
MySQL server, all created and closed by the pool (utf8mb4, autocommit, strict SQL mode). A
connection is pinged before it is lent out only when it has been idle for IDLE_PING_S or a
connection of the same server was lost since it was given back (`Freshness`); a dead one is
replaced by a new one.
"""

from __future__ import annotations

import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import pymysql
from dbutils.pooled_db import PooledDB
from pymysql.constants import CLIENT

from shard_store.backend import (
    Column,
    Conflict,
    Conn,
    Database,
    DbSpec,
    Params,
    Statement,
    StoreError,
    StoreUnavailable,
)

CONNECT_TIMEOUT_S = 5
IO_TIMEOUT_S = 60
SCHEMA_LOCK_WAIT_S = 30
MAX_STATEMENT_CHARS = 4 << 20
"""Split multi-row statements above this (max_allowed_packet is 16 MiB by default)."""
MAX_KEYS_PER_SELECT = 500
IDLE_PING_S = 5.0
"""A pooled connection idle for longer is pinged (and replaced if dead) before it is lent out."""

_GONE = {0, 1053, 1152, 1927, 2003, 2006, 2013, 2055}
"""Error codes meaning the server is down or the connection is lost or killed."""

_TYPES = {
    "id": "BIGINT",
    "int": "INT",
    "name": "VARCHAR(64)",
    "tag": "VARCHAR(16)",
    "hash": "VARCHAR(255)",
    "text": "TEXT",
}
_SESSION = "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"

_ESCAPES = (
    ("\\", "\\\\"),
    ("\0", "\\0"),
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("\x1a", "\\Z"),
    ("'", "\\'"),
    ('"', '\\"'),
)
"""PyMySQL's escapes, backslash first; a few str.replace calls beat str.translate ~10x."""
_NEEDS_ESCAPE = re.compile(r"[\0\\\n\r\x1a'\"]").search


def quote(value: str) -> str:
    """A str as a MySQL string literal (backslash escapes; the session mode guarantees them)."""
    if type(value) is not str:
        raise TypeError(f"expected str, got {type(value).__name__}")
    if _NEEDS_ESCAPE(value):
        for char, escaped in _ESCAPES:
            if char in value:
                value = value.replace(char, escaped)
    return "'" + value + "'"


@lru_cache(maxsize=64)
def row_formatter(kinds: str) -> Callable[[Sequence[Any]], str]:
    """A function turning one row into `(1,2,'x')`: one %-format per row, ints checked by %d."""
    fmt = "(" + ",".join("%d" if k == "i" else "%s" for k in kinds) + ")"
    strs = tuple(i for i, k in enumerate(kinds) if k == "s")

    def format_row(row: Sequence[Any]) -> str:
        values = list(row)
        for i in strs:
            values[i] = quote(values[i])
        return fmt % tuple(values)

    return format_row


def _one_line(err: BaseException) -> str:
    args: tuple[object, ...] = getattr(err, "args", ())
    text = str(args[1]) if len(args) > 1 else str(err)
    return " ".join(text.split()) or type(err).__name__


def _code(err: BaseException) -> int:
    args: tuple[object, ...] = getattr(err, "args", ())
    return args[0] if args and isinstance(args[0], int) else 0


def _no_failover(_err: BaseException) -> bool:
    """Never let SteadyDB silently re-run a failed statement; the pool's ping reconnects."""
    return False


class Freshness:
    """Which pooled connections need a ping before they are lent out: DBUtils' `ping` check.

    A connection given back healthy less than `idle_ping_s` ago, and since the last connection
    was lost, is lent out as it is; any other (idle, given back broken, new to the pool, or older
    than a loss — the server may have restarted) is pinged, and a dead one is reopened.
    """

    def __init__(
        self, idle_ping_s: float = IDLE_PING_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_ping_s = idle_ping_s
        self._clock = clock
        self._lock = threading.Lock()
        self._returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._lost_at = -math.inf

    def returned(self, raw: Any) -> None:
        """`raw` (a PyMySQL connection) came back to its pool healthy."""
        with self._lock:
            self._returned[raw] = self._clock()

    def lost(self) -> None:
        """A connection was lost: ping every one given back before now."""
        with self._lock:
            self._lost_at = self._clock()

    def __call__(self, raw: Any) -> bool:
        """DBUtils calls this on checkout; an exception means dead (DBUtils reopens it)."""
        now = self._clock()
        with self._lock:
            since = self._returned.pop(raw, None)
            fresh = since is not None and since > self._lost_at and now - since < self.idle_ping_s
        if not fresh:
            raw.ping(False)  # reconnect=False: raises if the connection is gone
        return True


class MySQLConn(Conn):
    """A pooled PyMySQL connection with one cursor."""

    def __init__(self, db: MySQLDatabase, pooled: Any, multi: bool) -> None:
        super().__init__(db)
        self._db = db
        self._multi = multi
        self._pooled = pooled
        self._cur = pooled.cursor()
        self._raw = pooled.dbapi_connection
        self.thread_id = int(self._raw.thread_id())
        """The server's id of this session (what KILL takes)."""

    def execute(self, sql: str, params: Params = None) -> int:
        try:
            return int(self._cur.execute(sql, params))
        except pymysql.err.Error as err:
            raise self._translate(err) from err

    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        try:
            self._cur.execute(sql, params)
            return list(self._cur.fetchall())
        except pymysql.err.Error as err:
            raise self._translate(err) from err

    def write_batch(self, statements: Sequence[Statement]) -> list[int]:
        """One round trip, `BEGIN;…;COMMIT`, on a batch connection (else one per statement).

        Fewer round trips matter twice: less latency, and fewer points where the writer thread
        must win the GIL back from busy submitter threads after waiting on the socket.
        A lone statement is sent alone: the session autocommits, so it is its own transaction
        (InnoDB rolls a failed statement back whole) and its OK comes after its commit — one
        result for PyMySQL to read instead of three (a moderate load's flush is one INSERT).
        """
        if not self._multi:
            return super().write_batch(statements)
        if len(statements) == 1:
            sql, params = statements[0]
            try:
                return [int(self._cur.execute(sql, params))]
            except pymysql.err.Error as err:
                self.rollback()
                raise self._translate(err) from err
        parts = [
            sql if params is None else self._cur.mogrify(sql, params) for sql, params in statements
        ]
        try:
            self._cur.execute(";".join(["BEGIN", *parts, "COMMIT"]))
            counts = []
            for _ in parts:
                self._cur.nextset()
                counts.append(int(self._cur.rowcount))
            self._cur.nextset()
        except pymysql.err.Error as err:
            self.rollback()
            raise self._translate(err) from err
        return counts

    def begin(self) -> None:
        try:
            self._pooled.begin()
        except pymysql.err.Error as err:
            raise self._translate(err) from err

    def commit(self) -> None:
        try:
            self._pooled.commit()
        except pymysql.err.Error as err:
            raise self._translate(err) from err

    def rollback(self) -> None:
        try:
            self._pooled.rollback()
        except pymysql.err.Error:
            self.broken = True

    def close(self) -> None:
        if self._pooled is None:
            return
        pooled, self._pooled = self._pooled, None
        try:
            self._cur.close()
        except pymysql.err.Error:
            self.broken = True
        if not self.broken:
            self._db.freshness.returned(self._raw)
        pooled.close()
        self._db.returned()

    def _translate(self, err: pymysql.err.Error) -> StoreError:
        if isinstance(err, pymysql.err.IntegrityError):
            return Conflict(_one_line(err))
        if isinstance(err, pymysql.err.InterfaceError) or _code(err) in _GONE:
            self.broken = True
            self._db.freshness.lost()
            return StoreUnavailable(f"SOIM_DB: lost {self._db.spec.display}: {_one_line(err)}")
        return StoreError(f"{self._db.spec.display}: {_one_line(err)}")


class MySQLDatabase(Database):
    """One MySQL database and its pool (one pool per database, as the shard map needs)."""

    kind = "mysql"
    insert_ignore = "INSERT IGNORE"

    def __init__(
        self, spec: DbSpec, index: int, *, pool_size: int = 8, idle_ping_s: float = IDLE_PING_S
    ) -> None:
        super().__init__(spec, index)
        self._closed = False
        self._lock = threading.Lock()
        self.freshness = Freshness(idle_ping_s)
        self._args: dict[str, Any] = dict(
            blocking=False,
            maxconnections=0,
            reset=False,
            ping=self.freshness,
            isfatal=_no_failover,
            host=spec.host,
            port=spec.port,
            user=spec.user,
            password=spec.password,
            database=spec.database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=IO_TIMEOUT_S,
            write_timeout=IO_TIMEOUT_S,
            init_command=_SESSION,
        )
        self._batch_pool: PooledDB | None = None
        try:
            self._pool = PooledDB(pymysql, mincached=1, maxcached=pool_size, **self._args)
        except pymysql.err.Error as err:
            raise StoreUnavailable(self._open_problem(err)) from None
        try:
            self.version = self.server_version()
        except StoreError:
            self._pool.close()
            raise
        self.table_options = f"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={self._collation()}"

    def _collation(self) -> str:
        """A NO PAD binary collation: strings compare by code point, as in Python and SQLite."""
        if "mariadb" in self.version.lower():
            return "utf8mb4_nopad_bin"
        major = re.match(r"\d+", self.version)
        return "utf8mb4_0900_bin" if major and int(major.group()) >= 8 else "utf8mb4_bin"

    def _open_problem(self, err: pymysql.err.Error) -> str:
        where = self.spec.display
        if _code(err) == 1049:
            return (
                f"SOIM_DB: database {self.spec.database!r} does not exist ({where}); create "
                f"it with CREATE DATABASE {self.spec.database} CHARACTER SET utf8mb4"
            )
        return f"SOIM_DB: cannot connect to {where}: {_one_line(err)}"

    def connection(self, batch: bool = False) -> MySQLConn:
        if self._closed:
            raise StoreError(f"{self.spec.display}: the store is closed")
        try:
            pool = self._batches() if batch else self._pool
            return MySQLConn(self, pool.connection(), batch)
        except pymysql.err.Error as err:
            raise StoreUnavailable(self._open_problem(err)) from None

    def _batches(self) -> PooledDB:
        """The multi-statement pool, made on first use (only batch writers need it)."""
        with self._lock:
            if self._batch_pool is None:
                self._batch_pool = PooledDB(
                    pymysql,
                    mincached=0,
                    maxcached=2,
                    client_flag=CLIENT.MULTI_STATEMENTS,
                    **self._args,
                )
            return self._batch_pool

    def returned(self) -> None:
        """A connection came back: after close(), close it instead of keeping it idle."""
        if self._closed:
            self.close()

    def interrupt(self, conn: Conn) -> None:
        if not isinstance(conn, MySQLConn):
            raise TypeError("not a connection of this database")
        with self.connection() as other:
            other.execute("KILL CONNECTION %s", (conn.thread_id,))

    def close(self) -> None:
        self._closed = True
        self._pool.close()
        if self._batch_pool is not None:
            self._batch_pool.close()

    def server_version(self) -> str:
        with self.connection() as conn:
            return str(conn.query("SELECT VERSION()")[0][0])

    def table_names(self, conn: Conn) -> list[str]:
        rows = conn.query(
            "SELECT TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME"
        )
        return [str(r[0]) for r in rows]

    def create_table_sql(
        self,
        name: str,
        columns: Sequence[Column],
        primary: Sequence[str],
        unique: Sequence[Sequence[str]],
        index: Sequence[Sequence[str]],
    ) -> list[str]:
        parts = [
            f"`{col}` {_TYPES[kind]} NOT NULL" + (f" DEFAULT {dflt}" if dflt else "")
            for col, kind, dflt in columns
        ]
        parts.append(f"PRIMARY KEY ({_names(primary)})")
        parts += [f"UNIQUE KEY `uk_{'_'.join(cols)}` ({_names(cols)})" for cols in unique]
        parts += [f"KEY `ix_{'_'.join(cols)}` ({_names(cols)})" for cols in index]
        body = ",\n  ".join(parts)
        return [f"CREATE TABLE IF NOT EXISTS `{name}` (\n  {body}\n) {self.table_options}"]

    def add_column(self, conn: Conn, name: str, column: Column) -> None:
        col, kind, dflt = column
        conn.execute(
            f"ALTER TABLE `{name}` ADD COLUMN IF NOT EXISTS `{col}` {_TYPES[kind]} "
            "NOT NULL" + (f" DEFAULT {dflt}" if dflt else "")
        )

    @contextmanager
    def schema_lock(self, conn: Conn) -> Iterator[None]:
        name = f"soim_schema_{self.spec.database}"
        got = conn.query("SELECT GET_LOCK(%s, %s)", (name, SCHEMA_LOCK_WAIT_S))[0][0]
        if got != 1:
            raise StoreError(f"{self.spec.display}: no schema lock within {SCHEMA_LOCK_WAIT_S} s")
        try:
            yield
        finally:
            conn.query("SELECT RELEASE_LOCK(%s)", (name,))

    def insert_statements(
        self,
        table: str,
        columns: Sequence[str],
        kinds: str,
        rows: Sequence[Sequence[Any]],
        ignore: bool = True,
    ) -> list[Statement]:
        verb = "INSERT IGNORE" if ignore else "INSERT"
        head = f"{verb} INTO `{table}` ({_names(columns)}) VALUES "
        fmt = row_formatter(kinds)
        values = [fmt(row) for row in rows]
        return [(head + ",".join(chunk), None) for chunk in _chunks_by_size(values)]

    def select_in_statements(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        kinds: str,
        keys: Sequence[Sequence[Any]],
    ) -> list[Statement]:
        fmt = row_formatter(kinds)
        head = f"SELECT {_names(columns)} FROM `{table}` WHERE ({_names(key)}) IN ("
        return [
            (head + ",".join(fmt(k) for k in keys[i : i + MAX_KEYS_PER_SELECT]) + ")", None)
            for i in range(0, len(keys), MAX_KEYS_PER_SELECT)
        ]


def _names(columns: Sequence[str]) -> str:
    return ",".join(f"`{c}`" for c in columns)


def _chunks_by_size(values: list[str]) -> Iterator[list[str]]:
    if sum(map(len, values)) <= MAX_STATEMENT_CHARS:
        yield values
        return
    chunk: list[str] = []
    size = 0
    for v in values:
        if chunk and size + len(v) > MAX_STATEMENT_CHARS:
            yield chunk
            chunk, size = [], 0
        chunk.append(v)
        size += len(v) + 1
    if chunk:
        yield chunk
