"""Versioned, idempotent DDL on both backends: re-running changes nothing, an older database is
migrated, a newer one or a different shard layout is refused."""

from __future__ import annotations

import pytest

from shard_store import LATEST, TABLES, StoreError
from shard_store.batch_writer import BatchWriter
from shard_store.schema import KIND_EDIT, MIGRATIONS, MessageRow, ddl, migrate, schema_version
from shard_store.settings import SettingError
from shard_store.store import Store
from tests.shard_store.conftest import schema_snapshot


def test_ddl_twice_changes_nothing(store: Store, db_url: str) -> None:
    db = store.home
    before = schema_snapshot(db)
    with db.connection() as conn:
        for m in MIGRATIONS:  # the raw statements again, ignoring the recorded version
            for stmt in ddl(db, m, 8):
                conn.execute(stmt)
    assert migrate(db, 8, 1) == LATEST
    with Store.open(db_url, 8) as again:  # what every node start does
        assert again.schema_versions() == [LATEST]
    assert schema_snapshot(db) == before


def test_every_table_exists_in_every_shard(store: Store) -> None:
    with store.home.connection() as conn:
        names = set(store.home.table_names(conn))
    want = {f"{t}_{n}" for t in TABLES for n in range(8)}
    assert want | {"id_segment", "schema_version", "store_meta"} <= names


def test_older_database_is_migrated(db_url: str) -> None:
    with Store.open(db_url, 8, target_version=1) as old:
        assert old.schema_versions() == [1]
        with old.home.connection() as conn:
            assert not any(t.startswith("message_") for t in old.home.table_names(conn))
        old.execute(
            "account",
            "ann",
            "INSERT INTO {t} (account, user_id, pw_hash, created) VALUES ('ann', 1, 'h', 0)",
        )
    with Store.open(db_url, 8) as new:
        assert new.schema_versions() == [LATEST]
        with new.home.connection() as conn:
            assert [
                r[0] for r in conn.query("SELECT version FROM schema_version ORDER BY version")
            ] == [m.version for m in MIGRATIONS]
        assert new.query(
            "account", "ann", "SELECT user_id FROM {t} WHERE account = %s", ("ann",)
        ) == [(1,)]
        assert new.query("message", 5, "SELECT COUNT(*) FROM {t}") == [(0,)]


def test_newer_schema_is_refused(store: Store, db_url: str) -> None:
    with store.home.connection() as conn:
        conn.execute(
            "INSERT INTO schema_version (version, description, applied) VALUES (99, 'future', 0)"
        )
        assert schema_version(conn) == 99
    with pytest.raises(StoreError, match="newer than this so-im"):
        Store.open(db_url, 8)


def test_changed_shard_count_is_refused(store: Store, db_url: str) -> None:
    with pytest.raises(SettingError) as err:
        Store.open(db_url, 16)
    assert err.value.var == "SOIM_SHARDS" and "re-sharding" in str(err.value)


def test_messages_of_v5_gain_kind_ref_seq_and_mentions(db_url: str) -> None:
    """v6 adds columns to every message table: older rows read as plain messages, new ones
    keep their kind, the seq they refer to and their mentions; migrating again changes
    nothing."""
    with Store.open(db_url, 8, target_version=5) as old:
        old.execute(
            "message",
            5,
            "INSERT INTO {t} (conv_id, seq, msg_id, sender, "
            "client_msg_id, ts, body) VALUES (5, 1, 51, 7, 'a', 0, 'before')",
        )
    with Store.open(db_url, 8) as new:
        assert new.schema_versions() == [LATEST]
        with BatchWriter(new) as writer:
            writer.submit(MessageRow(5, 2, 52, 7, "b", 1, "after", KIND_EDIT, 1, "7,8")).result(10)
        assert new.query(
            "message",
            5,
            "SELECT seq, kind, ref_seq, mentions FROM {t} WHERE conv_id = 5 ORDER BY seq",
        ) == [(1, 0, 0, ""), (2, 1, 1, "7,8")]
        with new.home.connection() as conn:
            migrate(new.home, 8, 1)
            assert schema_version(conn) == LATEST


def test_tokens_of_v7_gain_successor_and_claimed(db_url: str) -> None:
    """v8 adds the reuse grace's columns to every token table: a token issued before reads as
    live (unclaimed, no successor); migrating again changes nothing."""
    with Store.open(db_url, 8, target_version=7) as old:
        old.execute("token", 9, "INSERT INTO {t} (user_id, nonce, expires) VALUES (9, 1, 5)")
    with Store.open(db_url, 8) as new:
        assert new.schema_versions() == [LATEST] == [8]
        new.execute(
            "token",
            9,
            "INSERT INTO {t} (user_id, nonce, expires, successor, claimed) VALUES (9, 2, 6, 3, 4)",
        )
        assert new.query(
            "token", 9, "SELECT nonce, successor, claimed FROM {t} WHERE user_id = 9 ORDER BY nonce"
        ) == [(1, 0, 0), (2, 3, 4)]
        with new.home.connection() as conn:
            migrate(new.home, 8, 1)
            assert schema_version(conn) == LATEST
