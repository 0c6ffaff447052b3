"""Shard map: which database and which physical table hold a key, plus the ordered merge that
scatter-gather queries use.

Role: pure routing, no connections. Each of the D databases of SOIM_DB holds SOIM_SHARDS (N)
tables per logical table, so there are N x D shards. Shard g lives in database g % D as table
`<name>_<g // D>`. Integer ids route by `id % (N x D)` (that is `id & (N-1)` with one
database), strings by the crc32 of their UTF-8 bytes: stable across processes, versions and
machines (never Python's salted hash()).
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

PREFIX_END = "\U0010ffff"
"""Appended to a prefix to get the exclusive upper bound of a prefix range (see prefix_range)."""


@dataclass(frozen=True)
class Shard:
    """One shard: its global index, its database and its table number in that database."""

    index: int
    db: int
    table_no: int

    def table(self, logical: str) -> str:
        """The physical table name of `logical` in this shard, e.g. message_3."""
        return f"{logical}_{self.table_no}"


class ShardMap:
    """Stable routing of integer ids and strings to N tables per database x D databases."""

    def __init__(self, tables_per_db: int, databases: int = 1) -> None:
        if tables_per_db < 1 or tables_per_db & (tables_per_db - 1):
            raise ValueError(f"tables per database must be a power of two, got {tables_per_db}")
        if databases < 1:
            raise ValueError(f"need at least one database, got {databases}")
        self.tables_per_db = tables_per_db
        self.databases = databases
        self.total = tables_per_db * databases
        self._shards = [Shard(g, g % databases, g // databases) for g in range(self.total)]

    def index_of(self, key: int | str) -> int:
        """The global shard index of `key` (an int id or a str)."""
        if type(key) is int:
            return key % self.total
        if type(key) is str:
            return zlib.crc32(key.encode("utf-8", "surrogatepass")) % self.total
        raise TypeError(f"shard keys are int or str, got {type(key).__name__}")

    def shard_of(self, key: int | str) -> Shard:
        """The shard holding `key`."""
        return self._shards[self.index_of(key)]

    def shard(self, index: int) -> Shard:
        """Shard number `index` (0 <= index < total)."""
        return self._shards[index]

    def shards(self, db: int | None = None) -> list[Shard]:
        """All shards, or those of database `db`, in table-number order."""
        if db is None:
            return list(self._shards)
        return sorted((s for s in self._shards if s.db == db), key=lambda s: s.table_no)


def prefix_range(prefix: str) -> tuple[str, str]:
    """(lo, hi) with lo <= s < hi for every s starting with `prefix`, in code point order.

    Used as `col >= %s AND col < %s`: index friendly and the same on both backends (LIKE is
    case-insensitive on one and not the other). Strings with U+10FFFF right after the prefix
    fall outside the range; names never contain that noncharacter.
    """
    return prefix, prefix + PREFIX_END


def merge_ordered(
    parts: Iterable[list[tuple[Any, ...]]],
    key: Callable[[tuple[Any, ...]], Any],
    limit: int,
    reverse: bool = False,
) -> list[tuple[Any, ...]]:
    """Merge per-shard results, each already sorted by `key`, into the first `limit` rows."""
    return list(islice(heapq.merge(*parts, key=key, reverse=reverse), max(limit, 0)))
