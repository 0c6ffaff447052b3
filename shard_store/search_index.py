"""Full-text index of message bodies: its DDL (with the backfill of stored rows) and the one
query that searches it, for both backends.

Role: SQLite keeps an external-content FTS5 table `message_N_fts` per message table (bodies are
not stored twice), kept in step by triggers on insert, delete and update and rebuilt from the
stored rows when created; MariaDB keeps an InnoDB FULLTEXT index `ft_body` on the body column,
built over the stored rows by the ALTER that adds it; the body column then compares folding
case and accents (else InnoDB would index new words case-sensitively). A search gives words;
a message matches when every word starts one of its words (case-insensitive), newest first by
(ts, msg_id).
InnoDB indexes no word shorter than innodb_ft_min_token_size (3) nor a stopword, so such words
are matched by a regular expression within the conversations searched (no index: the rows of
those conversations are read). No connections of its
own: callers pass an open `Conn` or the `Database` being migrated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shard_store.backend import Conn, Database

MAX_WORDS = 8
MAX_WORD_CHARS = 64
MIN_INNODB_TOKEN = 3
INNODB_STOPWORDS = frozenset(
    (
        "a",
        "about",
        "an",
        "are",
        "as",
        "at",
        "be",
        "by",
        "com",
        "de",
        "en",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "la",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "who",
        "will",
        "with",
        "und",
        "www",
    )
)
"""InnoDB's default stopword list (INFORMATION_SCHEMA.INNODB_FT_DEFAULT_STOPWORD)."""
_WORD_RE = re.compile(r"\w+")


@dataclass(frozen=True)
class Scope:
    """A conversation to search and its reader's history floor (only seqs above it)."""

    conv_id: int
    floor_seq: int = 0


def words_of(query: str) -> list[str]:
    """The words of a search text, lower-cased, each at most MAX_WORD_CHARS, without repeats,
    at most MAX_WORDS (an empty list: nothing to search for)."""
    out: list[str] = []
    for word in _WORD_RE.findall(query.casefold()):
        word = word[:MAX_WORD_CHARS]
        if word not in out:
            out.append(word)
    return out[:MAX_WORDS]


def index_sql(db: Database, table: str) -> list[str]:
    """Idempotent statements that give message table `table` its index, filled from its rows."""
    if db.kind == "mysql":
        version = db.server_version().lower()
        mariadb = "mariadb" in version
        guard = "IF NOT EXISTS " if mariadb else ""
        return [
            f"ALTER TABLE `{table}` MODIFY `body` TEXT CHARACTER SET utf8mb4 COLLATE "
            f"{_folding_collation(version)} NOT NULL",
            f"CREATE FULLTEXT INDEX {guard}`ft_body` ON `{table}` (`body`)",
        ]
    fts = f"{table}_fts"
    delete = f"INSERT INTO `{fts}` (`{fts}`, rowid, body) VALUES ('delete', old.rowid, old.body);"
    insert = f"INSERT INTO `{fts}` (rowid, body) VALUES (new.rowid, new.body);"
    return [
        f"CREATE VIRTUAL TABLE IF NOT EXISTS `{fts}` USING fts5(body, content='{table}', "
        "content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')",
        f"CREATE TRIGGER IF NOT EXISTS `{fts}_ai` AFTER INSERT ON `{table}` BEGIN {insert} END",
        f"CREATE TRIGGER IF NOT EXISTS `{fts}_ad` AFTER DELETE ON `{table}` BEGIN {delete} END",
        f"CREATE TRIGGER IF NOT EXISTS `{fts}_au` AFTER UPDATE OF body ON `{table}` "
        f"BEGIN {delete} {insert} END",
        f"INSERT INTO `{fts}` (`{fts}`) VALUES ('rebuild')",
    ]


def _folding_collation(version: str) -> str:
    """A collation that folds case and accents, without trailing-space padding where there is
    one: InnoDB indexes a body's words as its collation compares them."""
    if "mariadb" in version:
        return "utf8mb4_unicode_520_nopad_ci"
    major = re.match(r"\d+", version)
    return "utf8mb4_0900_ai_ci" if major and int(major.group()) >= 8 else "utf8mb4_unicode_520_ci"


def search(
    conn: Conn,
    table: str,
    columns: Sequence[str],
    words: Sequence[str],
    scopes: Sequence[Scope],
    before: tuple[int, int] | None,
    limit: int,
) -> list[tuple[Any, ...]]:
    """`columns` of up to `limit` messages of `scopes` in message table `table` holding every
    word, newest first by (ts, msg_id), older than `before` (a (ts, msg_id)) when given."""
    if not words or not scopes:
        return []
    where = ["(" + " OR ".join(["(m.conv_id = %s AND m.seq > %s)"] * len(scopes)) + ")"]
    params: list[object] = [v for s in scopes for v in (s.conv_id, s.floor_seq)]
    if before is not None:
        where.append("(m.ts < %s OR (m.ts = %s AND m.msg_id < %s))")
        params += [before[0], before[0], before[1]]
    cols = ", ".join(f"m.{c}" for c in columns)
    if conn.db.kind == "mysql":
        source, match, match_params = _innodb_match(table, words)
    else:
        source = f"`{table}_fts` AS f JOIN `{table}` AS m ON m.rowid = f.rowid"
        match = f"f.`{table}_fts` MATCH %s"
        match_params = [" ".join(f'"{w}"*' for w in words)]
    sql = (
        f"SELECT {cols} FROM {source} WHERE {' AND '.join([match, *where])} "
        "ORDER BY m.ts DESC, m.msg_id DESC LIMIT %s"
    )
    return conn.query(sql, [*match_params, *params, limit])


def _innodb_match(table: str, words: Sequence[str]) -> tuple[str, str, list[object]]:
    """FROM, the match condition and its parameters for InnoDB: indexed words through MATCH,
    the rest (short words, stopwords) as a regular expression (the word at a word start)."""
    indexed = [w for w in words if len(w) >= MIN_INNODB_TOKEN and w not in INNODB_STOPWORDS]
    conds: list[str] = []
    params: list[object] = []
    if indexed:
        conds.append("MATCH(m.body) AGAINST (%s IN BOOLEAN MODE)")
        params.append(" ".join(f"+{w}*" for w in indexed))
    for w in words:
        if w not in indexed:  # a word of \w only: no regular expression syntax in it
            conds.append("m.body REGEXP %s")
            params.append("(*UCP)\\b" + w)
    return f"`{table}` AS m", " AND ".join(conds), params
