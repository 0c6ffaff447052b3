"""The MySQL pool on a real MariaDB: a connection is pinged before it is lent out only when it
has been idle or a connection was lost since it was given back, and a dead one is replaced."""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pytest

from shard_store.backend import StoreUnavailable, parse_db_urls
from shard_store.mysql import MySQLDatabase
from tests.conftest import MYSQL

pytestmark = pytest.mark.mysql


@pytest.fixture
def killer() -> Iterator[pymysql.connections.Connection]:
    """A connection of its own, to KILL the pool's connections with."""
    conn = pymysql.connect(**MYSQL, autocommit=True)  # type: ignore[arg-type]
    try:
        yield conn
    finally:
        conn.close()


def _kill(killer: pymysql.connections.Connection, *thread_ids: int) -> None:
    with killer.cursor() as cur:
        for thread_id in thread_ids:
            cur.execute("KILL CONNECTION %s", (thread_id,))


def _thread_id(db: MySQLDatabase) -> int:
    """The server's id of the session a fresh checkout runs on (queried, not cached)."""
    with db.connection() as conn:
        return int(conn.query("SELECT CONNECTION_ID()")[0][0])


def test_an_idle_connection_is_pinged_and_replaced_when_dead(
    mysql_db: str, killer: pymysql.connections.Connection
) -> None:
    db = MySQLDatabase(parse_db_urls(mysql_db)[0], 0, pool_size=1, idle_ping_s=0.0)
    try:
        first = _thread_id(db)
        _kill(killer, first)
        second = _thread_id(db)  # the ping on checkout found it dead: a new one
        assert second != first
        assert _thread_id(db) == second  # and that one is kept
    finally:
        db.close()


def test_a_recent_connection_is_lent_without_a_ping_and_a_loss_pings_the_rest(
    mysql_db: str, killer: pymysql.connections.Connection
) -> None:
    db = MySQLDatabase(parse_db_urls(mysql_db)[0], 0, pool_size=2, idle_ping_s=3600.0)
    try:
        a, b = db.connection(), db.connection()  # two pooled connections
        old = {a.thread_id, b.thread_id}
        a.close()
        b.close()
        _kill(killer, *old)
        # given back a moment ago: lent out unchecked, so the statement finds it dead
        with pytest.raises(StoreUnavailable), db.connection() as conn:
            conn.query("SELECT 1")
        # that loss gets every connection given back before it pinged: both are replaced
        with db.connection() as one, db.connection() as two:
            fresh = {int(c.query("SELECT CONNECTION_ID()")[0][0]) for c in (one, two)}
        assert len(fresh) == 2 and not fresh & old
    finally:
        db.close()
