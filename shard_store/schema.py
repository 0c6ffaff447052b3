"""Tables and migrations of the shard store: the conversation, message, cursor and
membership tables, created idempotently in every shard, versioned in `schema_version` by
ordered migrations, with the shard layout recorded.

Role: own the DDL, the row shape of messages and the migration runner that `Store.open` calls
on each database. No connections of its own: it borrows one from the database it migrates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import NamedTuple

from shard_store.backend import Column, Conn, Database, StoreError
from shard_store.search_index import index_sql
from shard_store.settings import SettingError

FRIEND_PENDING = "pending"
FRIEND_ACCEPTED = "accepted"
CONV_DIRECT = "direct"
CONV_GROUP = "group"
DEFAULT_USER_LIMIT = 500
MAX_NAME_CHARS = 64
MAX_MENTIONS_CHARS = 255
"""The VARCHAR of a message's mentions: `schema.contracts.message.MAX_MENTIONS` user ids,
comma-separated."""
KIND_TEXT, KIND_EDIT, KIND_RECALL = 0, 1, 2
"""message.kind: client.proto MessageKind numbers."""


class MessageRow(NamedTuple):
    """One row of the message table, in column order."""

    conv_id: int
    seq: int
    msg_id: int
    sender: int
    client_msg_id: str
    ts: int
    """Milliseconds since the epoch, stamped by the storage node."""
    body: str
    kind: int = KIND_TEXT
    """A message, or an edit or recall of the message `ref_seq`."""
    ref_seq: int = 0
    """The seq a message replies to, or an edit or recall changes (0: none)."""
    mentions: str = ""
    """User ids mentioned, comma-separated ('' for none)."""


MESSAGE_KINDS = "iiiisisiis"
"""Per column of MessageRow: i = int, s = str (for the statement builders)."""


@dataclass(frozen=True)
class Table:
    """A logical table. `key` is the shard key column; None means one unsharded table."""

    name: str
    columns: tuple[Column, ...]
    primary: tuple[str, ...]
    key: str | None
    unique: tuple[tuple[str, ...], ...] = ()
    index: tuple[tuple[str, ...], ...] = ()
    every_db: bool = False
    """Unsharded tables live in database 0 only, unless every database needs one."""

    @property
    def key_is_str(self) -> bool:
        """Whether the shard key is a string (routed by crc32) rather than an id."""
        return any(c[0] == self.key and c[1] != "id" for c in self.columns)


def _cols(*spec: str) -> tuple[Column, ...]:
    """`"name kind"` or `"name kind=default"` to Column tuples."""
    out = []
    for item in spec:
        name, kind = item.split(" ")
        kind, _, default = kind.partition("=")
        out.append((name, kind, default or None))
    return tuple(out)


ACCOUNT = Table(
    "account",
    _cols("account name", "user_id id", "pw_hash hash", "created id"),
    ("account",),
    key="account",
)
USER = Table(
    "user",
    _cols("user_id id", "account name", "nickname name=''", "disabled int=0", "created id"),
    ("user_id",),
    key="user_id",
)
FRIEND = Table(
    "friend",
    _cols("user_id id", "friend_id id", "conv_id id", "state tag", "requested_by id", "created id"),
    ("user_id", "friend_id"),
    key="user_id",
)
GROUP = Table(
    "group",
    _cols(
        "group_id id", "name name", "owner id", f"user_limit int={DEFAULT_USER_LIMIT}", "created id"
    ),
    ("group_id",),
    key="group_id",
    index=(("name",),),
)
GROUP_NAME = Table("group_name", _cols("name name", "group_id id"), ("name",), key="name")
GROUP_MEMBER = Table(
    "group_member",
    _cols("group_id id", "user_id id", "joined id"),
    ("group_id", "user_id"),
    key="group_id",
)
GROUP_RULE = Table(
    "group_rule",
    _cols("group_id id", "visibility int", "history int", "updated id"),
    ("group_id",),
    key="group_id",
)
"""A group's visibility and history rule (client.proto GroupVisibility / GroupHistory numbers).
A group created before schema v4 has no row: public, history all (as it always was)."""
GROUP_PASS = Table(
    "group_pass",
    _cols("group_id id", "user_id id", "invited_by id=0", "floor_seq id=0", "updated id"),
    ("group_id", "user_id"),
    key="group_id",
)
"""A user's pass to a group: the owner's invitation (invited_by) before joining, then the
member's history floor (the group's last seq when they joined); dropped when they leave."""
USER_GROUP = Table(
    "user_group",
    _cols("user_id id", "group_id id", "joined id"),
    ("user_id", "group_id"),
    key="user_id",
)
MESSAGE = Table(
    "message",
    _cols(
        "conv_id id",
        "seq id",
        "msg_id id",
        "sender id",
        "client_msg_id name",
        "ts id",
        "body text",
        "kind int=0",
        "ref_seq id=0",
        "mentions hash=''",
    ),
    ("conv_id", "seq"),
    key="conv_id",
    unique=(("conv_id", "sender", "client_msg_id"),),
)
_MESSAGE_V2 = replace(MESSAGE, columns=MESSAGE.columns[:7])
"""The message table as schema v2 created it; v6 added kind, ref_seq and mentions."""
CONVERSATION = Table(
    "conversation",
    _cols("conv_id id", "kind tag", "last_seq id=0", "created id"),
    ("conv_id",),
    key="conv_id",
)
CURSOR = Table(
    "cursor",
    _cols("user_id id", "conv_id id", "read_seq id=0", "delivered_seq id=0"),
    ("user_id", "conv_id"),
    key="user_id",
)
ID_SEGMENT = Table(
    "id_segment",
    _cols("biz_tag name", "max_id id=0", "step int", "version id=0", "updated id"),
    ("biz_tag",),
    key=None,
)
TOKEN = Table(
    "token",
    _cols("user_id id", "nonce id", "expires id", "successor id=0", "claimed id=0"),
    ("user_id", "nonce"),
    key="user_id",
)
"""Session tokens: a signed token resumes only while its (user_id, nonce) row is here
unclaimed (claimed = 0); a resumed token's row names its successor's nonce and the claim time
(ms) until its reuse grace passes (nodes.directory.token_rows)."""
_TOKEN_V3 = replace(TOKEN, columns=TOKEN.columns[:3])
"""The token table as schema v3 created it; v8 added successor and claimed."""
USER_BLOCK = Table(
    "user_block",
    _cols("user_id id", "other_id id", "mine int", "created id"),
    ("user_id", "other_id", "mine"),
    key="user_id",
)
"""Blocks, one row in each user's shard: (A, B, mine=1) A blocks B — the truth, read for sends
and friend requests —; (B, A, mine=0) its mirror, B is blocked by A — read for presence."""
STORE_META = Table("store_meta", _cols("k name", "v hash"), ("k",), key=None, every_db=True)
SCHEMA_VERSION = Table(
    "schema_version",
    _cols("version int", "description hash", "applied id"),
    ("version",),
    key=None,
    every_db=True,
)

TABLES = {
    t.name: t
    for t in (
        ACCOUNT,
        USER,
        FRIEND,
        GROUP,
        GROUP_NAME,
        GROUP_MEMBER,
        GROUP_RULE,
        GROUP_PASS,
        USER_GROUP,
        MESSAGE,
        CONVERSATION,
        CURSOR,
        TOKEN,
        USER_BLOCK,
    )
}
"""The sharded logical tables, by name."""


@dataclass(frozen=True)
class Migration:
    """One step of the schema; applied once per database, in version order."""

    version: int
    description: str
    tables: tuple[Table, ...]
    searchable: tuple[Table, ...] = ()
    """Tables whose physical tables get the full-text index of `search_index`."""
    columns: tuple[tuple[Table, Column], ...] = ()
    """Columns added to (sharded) tables of earlier migrations."""


MIGRATIONS = (
    Migration(
        1,
        "store layout, accounts, users, friends, groups, id segments",
        (
            STORE_META,
            ACCOUNT,
            USER,
            FRIEND,
            GROUP,
            GROUP_NAME,
            GROUP_MEMBER,
            USER_GROUP,
            ID_SEGMENT,
        ),
    ),
    Migration(2, "messages, conversations, read cursors", (_MESSAGE_V2, CONVERSATION, CURSOR)),
    Migration(3, "session tokens (revocation and rotation)", (_TOKEN_V3,)),
    Migration(
        4,
        "group visibility and history rules, invitations, history floors",
        (GROUP_RULE, GROUP_PASS),
    ),
    Migration(5, "user blocks", (USER_BLOCK,)),
    Migration(
        6,
        "message kinds: edits, recalls, replies, mentions",
        (),
        columns=tuple((MESSAGE, column) for column in MESSAGE.columns[7:]),
    ),
    # after the columns: adding a column to a table with a FULLTEXT index rebuilds it
    Migration(
        7,
        "full-text search index of message bodies (built over stored messages)",
        (),
        searchable=(MESSAGE,),
    ),
    Migration(
        8,
        "token reuse grace: a resumed token's successor and claim time",
        (),
        columns=tuple((TOKEN, column) for column in TOKEN.columns[3:]),
    ),
)
LATEST = MIGRATIONS[-1].version


def ddl(db: Database, migration: Migration, tables_per_db: int) -> list[str]:
    """The idempotent statements of `migration` for database `db`."""
    out: list[str] = []
    for t in migration.tables:
        if t.key is None and not t.every_db and db.index != 0:
            continue
        names = [f"{t.name}_{n}" for n in range(tables_per_db)] if t.key else [t.name]
        for name in names:
            out += db.create_table_sql(name, t.columns, t.primary, t.unique, t.index)
    for t in migration.searchable:
        for n in range(tables_per_db):
            out += index_sql(db, f"{t.name}_{n}")
    return out


def add_columns(db: Database, conn: Conn, migration: Migration, tables_per_db: int) -> None:
    """Add the columns of `migration` to every physical table of theirs that lacks them."""
    for t, column in migration.columns:
        for n in range(tables_per_db):
            db.add_column(conn, f"{t.name}_{n}", column)


def schema_version(conn: Conn) -> int:
    """The version recorded in this database (0 when nothing is applied)."""
    return int(conn.query("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0][0])


def migrate(db: Database, tables_per_db: int, db_count: int, target: int = LATEST) -> int:
    """Bring `db` up to `target` (default: the latest) under the schema lock; return its version.

    Safe to run from many processes at once and any number of times. Refuses a database whose
    schema is newer than this code, or whose recorded shard layout differs from the configured one.
    """
    with db.connection() as conn, db.schema_lock(conn):
        s = SCHEMA_VERSION
        for stmt in db.create_table_sql(s.name, s.columns, s.primary, s.unique, s.index):
            conn.execute(stmt)
        current = schema_version(conn)
        if current > LATEST:
            raise StoreError(
                f"SOIM_DB: {db.spec.display} has schema v{current}, newer than this "
                f"so-im (v{LATEST}); upgrade so-im"
            )
        for m in MIGRATIONS:
            if current < m.version <= target:
                for stmt in ddl(db, m, tables_per_db):
                    conn.execute(stmt)
                add_columns(db, conn, m, tables_per_db)
                conn.execute(
                    "INSERT INTO schema_version (version, description, applied) "
                    "VALUES (%s, %s, %s)",
                    (m.version, m.description, _now_ms()),
                )
                current = m.version
        if current >= 1:
            _check_layout(conn, db, tables_per_db, db_count)
    return current


def _check_layout(conn: Conn, db: Database, tables_per_db: int, db_count: int) -> None:
    want = {
        "tables_per_db": str(tables_per_db),
        "db_index": str(db.index),
        "db_count": str(db_count),
    }
    have = {str(k): str(v) for k, v in conn.query("SELECT k, v FROM store_meta")}
    if not have:
        for k, v in want.items():
            conn.execute(f"{db.insert_ignore} INTO store_meta (k, v) VALUES (%s, %s)", (k, v))
        return
    if have.get("tables_per_db") != want["tables_per_db"]:
        raise SettingError(
            "SOIM_SHARDS",
            f"is {tables_per_db} but {db.spec.display} holds "
            f"{have.get('tables_per_db')} tables per logical table; re-sharding "
            "is not supported",
        )
    if have.get("db_index") != want["db_index"] or have.get("db_count") != want["db_count"]:
        raise SettingError(
            "SOIM_DB",
            f"{db.spec.display} was database {have.get('db_index')} "
            f"of {have.get('db_count')}, now listed as {db.index} of {db_count}; "
            "keep the SOIM_DB list in its original order",
        )


def _now_ms() -> int:
    return int(time.time() * 1000)
