"""The full-text index of message bodies on real MariaDB (InnoDB FULLTEXT) and SQLite (FTS5):
messages stored before the index existed are found once a store is upgraded to it, words match
as word prefixes whatever their case and accents (short words and stopwords too), history
floors and paging bound the answer, and a deleted (purged) message is not found."""

from __future__ import annotations

from shard_store import BatchWriter, MessageRow, Store
from shard_store.search_index import Scope, search, words_of
from tests.shard_store.conftest import msg

CONV = 11
BODIES = [
    "Hello World",
    "the cat is on a mat",
    "hello again, world!",
    "Go north",
    "worldwide news",
    "nothing here",
]


def _store_v4(store: Store, rows: list[MessageRow]) -> None:
    """Rows as a schema v4 store holds them (no kind, ref_seq, mentions)."""
    for r in rows:
        store.execute(
            "message",
            r.conv_id,
            "INSERT INTO {t} (conv_id, seq, msg_id, sender, "
            "client_msg_id, ts, body) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            r[:7],
        )


def _store(store: Store, rows: list[MessageRow]) -> None:
    with BatchWriter(store) as writer:
        for f in writer.submit_many(rows):
            f.result(30)


def _find(
    store: Store,
    query: str,
    scopes: list[Scope] | None = None,
    before: tuple[int, int] | None = None,
    limit: int = 50,
) -> list[int]:
    loc = store.locate("message", CONV)
    with loc.db.connection() as conn:
        rows = search(
            conn,
            loc.table,
            MessageRow._fields,
            words_of(query),
            scopes or [Scope(CONV)],
            before,
            limit,
        )
    return [MessageRow(*r).seq for r in rows]


def test_stored_messages_are_indexed_on_upgrade(db_url: str) -> None:
    with Store.open(db_url, 8, target_version=4) as old:
        _store_v4(old, [msg(CONV, i + 1, body=b) for i, b in enumerate(BODIES)])
    with Store.open(db_url, 8) as store:
        assert _find(store, "hello") == [3, 1]
        assert _find(store, "WORLD hel") == [3, 1]
        assert _find(store, "world") == [5, 3, 1]  # "world" starts "worldwide"
        assert _find(store, "the cat") == [2]  # a stopword and a short word count
        assert _find(store, "go") == [4]
        assert _find(store, "cat dog") == []
        _store(store, [msg(CONV, 7, body="HELLO from the new index, Café")])
        assert _find(store, "hello") == [7, 3, 1]  # new rows fold case too
        assert _find(store, "cafe") == _find(store, "CAFÉ") == [7]


def test_floors_paging_and_deletes(store: Store) -> None:
    _store(store, [msg(CONV, s, body=f"ping {s}") for s in range(1, 11)])
    assert _find(store, "ping", [Scope(CONV, floor_seq=7)]) == [10, 9, 8]
    assert _find(store, "ping", limit=3) == [10, 9, 8]
    seventh = msg(CONV, 7)
    assert _find(store, "ping", before=(seventh.ts, seventh.msg_id), limit=3) == [6, 5, 4]
    assert _find(store, "ping", [Scope(CONV + 1)]) == []
    store.execute("message", CONV, "DELETE FROM {t} WHERE conv_id = %s AND seq <= %s", (CONV, 5))
    assert _find(store, "ping") == [10, 9, 8, 7, 6]


def test_words_of_a_query() -> None:
    assert words_of("Hello, WORLD! hello  x_y 42") == ["hello", "world", "x_y", "42"]
    assert words_of("?! ...") == []
    assert len(words_of(" ".join(f"w{i}" for i in range(20)))) == 8
