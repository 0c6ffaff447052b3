"""Store: the shard store's front door. Opens every database of SOIM_DB, migrates it, routes
table access by shard key, and scatter-gathers the queries that miss the key.

Role: own the databases (and so the connection pools) of one process; a node opens one Store at
start and closes it at shutdown. Its connections are the pools of `shard_store.mysql` or
`shard_store.sqlite`; SQL given to it names the physical table as `{t}` and uses `%s` params.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from shard_store.backend import Database, Params, open_database, parse_db_urls
from shard_store.schema import LATEST, TABLES, migrate, schema_version
from shard_store.settings import StoreSettings
from shard_store.shards import Shard, ShardMap, merge_ordered

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Location:
    """Where one key of one logical table lives."""

    db: Database
    table: str
    shard: Shard


@dataclass(frozen=True)
class TableCount:
    """Rows of one physical table, for `soimctl shards`."""

    db: str
    logical: str
    table: str
    rows: int


class Store:
    """The databases of SOIM_DB and the shard map over them. Thread-safe; close it once."""

    def __init__(self, databases: Sequence[Database], shard_map: ShardMap) -> None:
        self.databases = tuple(databases)
        self.shard_map = shard_map
        self.kind = self.databases[0].kind

    @classmethod
    def open(
        cls,
        db: str = "sqlite:var/data",
        shards: int = 8,
        *,
        pool_size: int = 8,
        busy_timeout_s: float = 10.0,
        target_version: int = LATEST,
    ) -> Store:
        """Open and migrate every database of `db` (a SOIM_DB value).

        Raises SettingError("SOIM_DB", …) for a malformed value and StoreUnavailable, whose
        message is one line naming SOIM_DB, for a database that is down or unreachable.
        """
        specs = parse_db_urls(db)
        shard_map = ShardMap(shards, len(specs))
        opened: list[Database] = []
        try:
            for i, spec in enumerate(specs):
                opened.append(
                    open_database(spec, i, pool_size=pool_size, busy_timeout_s=busy_timeout_s)
                )
            for database in opened:
                migrate(database, shards, len(opened), target=target_version)
        except BaseException:
            for database in opened:
                database.close()
            raise
        return cls(opened, shard_map)

    @classmethod
    def from_settings(cls, settings: StoreSettings, **options: Any) -> Store:
        """`Store.open(settings.db, settings.shards, …)`."""
        return cls.open(settings.db, settings.shards, **options)

    @property
    def home(self) -> Database:
        """Database 0: holds the unsharded tables (id_segment)."""
        return self.databases[0]

    def locate(self, table: str, key: int | str) -> Location:
        """The database and physical table holding `key` of logical `table`."""
        spec = TABLES.get(table)
        if spec is None:
            raise KeyError(f"no sharded table {table!r}")
        if spec.key_is_str != (type(key) is str):
            raise TypeError(f"{table} is sharded by {spec.key}; got {type(key).__name__} {key!r}")
        shard = self.shard_map.shard_of(key)
        return Location(self.databases[shard.db], shard.table(table), shard)

    def query(self, table: str, key: int | str, sql: str, params: Params = ()) -> list[Row]:
        """Run a SELECT on the shard of `key`; `{t}` in `sql` is its physical table."""
        loc = self.locate(table, key)
        with loc.db.connection() as conn:
            return conn.query(sql.replace("{t}", f"`{loc.table}`"), params)

    def execute(self, table: str, key: int | str, sql: str, params: Params = ()) -> int:
        """Run one autocommit statement on the shard of `key`; return affected rows."""
        loc = self.locate(table, key)
        with loc.db.connection() as conn:
            return conn.execute(sql.replace("{t}", f"`{loc.table}`"), params)

    def scatter(
        self,
        table: str,
        sql: str,
        params: Params,
        *,
        order_by: str,
        key: Callable[[Row], Any],
        limit: int,
        reverse: bool = False,
    ) -> list[Row]:
        """Run `sql` (a SELECT with `{t}`, no ORDER BY or LIMIT) on every shard of `table`.

        Each shard returns at most `limit` rows ordered by `order_by` (DESC when `reverse`);
        the answer is their merge by `key` (which must order rows as `order_by` does), cut at
        `limit`: exactly what one unsharded table would answer.
        """
        if table not in TABLES:
            raise KeyError(f"no sharded table {table!r}")
        tail = f" ORDER BY {order_by}{' DESC' if reverse else ''} LIMIT {int(limit)}"
        parts: list[list[Row]] = []
        for database in self.databases:
            with database.connection() as conn:
                for shard in self.shard_map.shards(database.index):
                    text = sql.replace("{t}", f"`{shard.table(table)}`") + tail
                    parts.append(conn.query(text, params))
        return merge_ordered(parts, key, limit, reverse)

    def ping(self) -> None:
        """SELECT 1 on every database (blocking; raises when one does not answer): the probe
        of a node's database readiness check."""
        for database in self.databases:
            with database.connection() as conn:
                conn.query("SELECT 1")

    def schema_versions(self) -> list[int]:
        """The schema version of each database."""
        out = []
        for database in self.databases:
            with database.connection() as conn:
                out.append(schema_version(conn))
        return out

    def row_counts(self) -> list[TableCount]:
        """Exact row counts of every shard table (COUNT(*): takes a while on huge tables)."""
        out = []
        for database in self.databases:
            with database.connection() as conn:
                for logical in TABLES:
                    for shard in self.shard_map.shards(database.index):
                        name = shard.table(logical)
                        n = conn.query(f"SELECT COUNT(*) FROM `{name}`")[0][0]
                        out.append(TableCount(database.spec.display, logical, name, int(n)))
        return out

    def close(self) -> None:
        """Close every pool. Close writers and allocators that use this store first."""
        for database in self.databases:
            database.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
