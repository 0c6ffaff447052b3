"""Shard store fixtures: the same tests run on real MariaDB and on SQLite in a tmp dir.

`db_url` is parametrized over both backends; `store` opens it; `faults` stalls and kills a
writer's flush the way each backend can fail (MySQL: a row lock, then KILL CONNECTION; SQLite:
a slow trigger, then sqlite3 interrupt). Every wait has a deadline (tests.support.wait_until).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql
import pytest

from shard_store import BatchWriter, MessageRow, Store
from shard_store.backend import Database, parse_db_urls
from shard_store.sqlite import SQLiteDatabase
from tests.support import wait_until

BACKENDS = [pytest.param("mysql", marks=pytest.mark.mysql), "sqlite"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A SOIM_DB value for an empty database of `backend`."""
    if backend == "mysql":
        return str(request.getfixturevalue("mysql_db"))
    return f"sqlite:{tmp_path / 'data'}"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url, 8)
    try:
        yield s
    finally:
        s.close()


def msg(
    conv: int, seq: int, cmid: str = "", *, sender: int = 7, msg_id: int = 0, body: str = "hello"
) -> MessageRow:
    """A message row with sensible defaults (msg_id derived from conv and seq)."""
    return MessageRow(
        conv,
        seq,
        msg_id or conv * 1_000_000 + seq,
        sender,
        cmid or f"c{conv}-{seq}",
        1_700_000_000_000 + seq,
        body,
    )


def stored_messages(store: Store) -> set[MessageRow]:
    """Every row of every message shard."""
    out: set[MessageRow] = set()
    for db in store.databases:
        with db.connection() as conn:
            for shard in store.shard_map.shards(db.index):
                rows = conn.query(
                    f"SELECT conv_id, seq, msg_id, sender, client_msg_id, ts, body "
                    f"FROM `{shard.table('message')}`"
                )
                out.update(MessageRow(*r) for r in rows)
    return out


def schema_snapshot(db: Database) -> list[Any]:
    """Everything the DDL decides (tables, columns, keys) plus the version and layout rows."""
    with db.connection() as conn:
        if db.kind == "mysql":
            snap: list[Any] = [
                conn.query(f"SHOW CREATE TABLE `{t}`")[0] for t in db.table_names(conn)
            ]
        else:
            snap = conn.query("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")
        snap += conn.query("SELECT version, description, applied FROM schema_version")
        snap += conn.query("SELECT k, v FROM store_meta ORDER BY k")
    return snap


class Faults:
    """Stall a flush that writes to one shard table, then kill it mid-flush."""

    def __init__(self, store: Store, url: str) -> None:
        self.store = store
        self.url = url

    @contextmanager
    def stall(self, row: MessageRow) -> Iterator[None]:
        """Make a flush containing `row` block in its INSERT into row's table until exit."""
        loc = self.store.locate("message", row.conv_id)
        if self.store.kind == "mysql":
            spec = parse_db_urls(self.url)[loc.shard.db]
            conn = pymysql.connect(
                host=spec.host,
                port=spec.port,
                user=spec.user,
                password=spec.password,
                database=spec.database,
            )
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        f"INSERT INTO `{loc.table}` (conv_id, seq, msg_id, sender, "
                        "client_msg_id, ts, body) VALUES (%s,%s,0,0,'stall',0,'')",
                        (row.conv_id, row.seq),
                    )
                yield
            finally:
                conn.rollback()
                conn.close()
            return
        assert isinstance(loc.db, SQLiteDatabase)
        conn2 = sqlite3.connect(loc.db.path, isolation_level=None)
        try:
            conn2.execute("CREATE TABLE IF NOT EXISTS stall_rows (n INTEGER)")
            conn2.execute(
                "INSERT INTO stall_rows WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL "
                "SELECT n + 1 FROM c WHERE n < 3000) SELECT n FROM c"
            )
            conn2.execute(
                f"CREATE TRIGGER stall BEFORE INSERT ON `{loc.table}` "
                f"WHEN NEW.conv_id = {row.conv_id} BEGIN "
                "SELECT count(*) FROM stall_rows a, stall_rows b, stall_rows c; END"
            )
            yield
        finally:
            conn2.execute("DROP TRIGGER IF EXISTS stall")
            conn2.execute("DROP TABLE IF EXISTS stall_rows")
            conn2.close()

    def wait_stalled(self, writer: BatchWriter, row: MessageRow) -> None:
        """Wait until the writer's flush is blocked in its INSERT into row's table."""
        wait_until(lambda: writer.in_flight == 1, what="a flush in flight")
        if self.store.kind == "mysql":
            table = self.store.locate("message", row.conv_id).table
            with self.store.locate("message", row.conv_id).db.connection() as conn:
                wait_until(
                    lambda: (
                        conn.query(
                            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                            "WHERE DB = DATABASE() AND ID <> CONNECTION_ID() AND INFO LIKE %s",
                            (f"%INSERT%INTO `{table}`%",),
                        )[0][0]
                        == 1
                    ),
                    what="the writer blocked on the row lock",
                )

    def kill(self, writer: BatchWriter, futures: list[Any]) -> None:
        """Kill the stalled flush (KILL CONNECTION / interrupt) and wait for its futures."""
        if self.store.kind == "mysql":
            assert writer.abort_flush()

        def killed() -> bool:
            if all(f.done() for f in futures):
                return True
            if self.store.kind == "sqlite":  # interrupt only hits a running statement: repeat
                writer.abort_flush()
            return False

        wait_until(killed, what="the killed flush to fail")


@pytest.fixture
def faults(store: Store, db_url: str) -> Faults:
    return Faults(store, db_url)
