"""shard_store: sharded MySQL (PyMySQL + DBUtils pools) or embedded SQLite, Leaf segment ids,
a group-commit batch writer for messages, and the optional Redis cache.

Role: the public names of the package; each lives in its own module. No connections here.

    settings = StoreSettings.from_env()          # SOIM_DB, SOIM_SHARDS, SOIM_REDIS_*, SOIM_BATCH_*
    store = Store.from_settings(settings)        # opens and migrates every SOIM_DB database
    rows = store.query("friend", user_id, "SELECT friend_id, conv_id FROM {t} WHERE user_id=%s",
                       (user_id,))
    ids = SegmentAllocator(store); conv_id = ids.next_id("conv")
    writer = BatchWriter.from_settings(store, settings); fut = writer.submit(MessageRow(...))
    ...; writer.close(); ids.close(); store.close()
"""

from shard_store.backend import (
    Conflict,
    Conn,
    Database,
    FlushFailed,
    SeqClash,
    StoreError,
    StoreUnavailable,
    WriterClosed,
    parse_db_urls,
)
from shard_store.batch_writer import BatchWriter, WriterStats
from shard_store.cache import Cache, CacheUnavailable
from shard_store.schema import (
    CONV_DIRECT,
    CONV_GROUP,
    DEFAULT_USER_LIMIT,
    FRIEND_ACCEPTED,
    FRIEND_PENDING,
    LATEST,
    MAX_NAME_CHARS,
    TABLES,
    MessageRow,
)
from shard_store.segments import SegmentAllocator
from shard_store.settings import SettingError, StoreSettings
from shard_store.shards import Shard, ShardMap, prefix_range
from shard_store.store import Location, Store, TableCount

__all__ = [
    "CONV_DIRECT",
    "CONV_GROUP",
    "DEFAULT_USER_LIMIT",
    "FRIEND_ACCEPTED",
    "FRIEND_PENDING",
    "LATEST",
    "MAX_NAME_CHARS",
    "TABLES",
    "BatchWriter",
    "Cache",
    "CacheUnavailable",
    "Conflict",
    "Conn",
    "Database",
    "FlushFailed",
    "Location",
    "MessageRow",
    "SegmentAllocator",
    "SeqClash",
    "SettingError",
    "Shard",
    "ShardMap",
    "Store",
    "StoreError",
    "StoreSettings",
    "StoreUnavailable",
    "TableCount",
    "WriterClosed",
    "WriterStats",
    "parse_db_urls",
    "prefix_range",
]
