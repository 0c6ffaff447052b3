"""The storage node's sequencer: per-conversation seqs and dedup of retried sends.

Role: the `shard_store.batch_writer.Sequencer` of the node's writer. In the writer lane of each
database (one batch at a time), just before a batch's SQL is built, it stamps every row with the
next seq of its conversation and settles retried sends — same conversation, sender and
client_msg_id — without writing them again: a retry of a row still in flight follows that row's
future (acked with the same seq and msg_id when it commits, failed when it fails), a retry of a
stored row resolves to it. The writer makes a failed flush roll back (see its module doc): the
sequencer then forgets the conversations involved and loads them again.

A conversation's state is loaded on first use: its last seq (MAX(seq), an index seek). A retry
comes within RETRY_WINDOW_S of its send, so dedup needs only the keys of that window. A
conversation loaded with messages looks up the keys it has not seen (one query per shard table
per batch) for one window after its load; one loaded empty never needs to. Memory is bounded
per database: keys of settled rows beyond MAX_KEYS or MAX_KEY_BYTES are evicted oldest first,
and a retry of an evicted key is recognised by the key hashes of the current and the previous
window (a set of ints each) and looked up; idle conversations beyond MAX_CONVS are dropped.
Each load of a conversation has a generation; keys of an older one are ignored. (Before the
hashes, an evicted key made its conversation look up every later send: a node that had stored
~50,000 messages looked nearly every send up, and bench chat's median latency tripled.)
No sockets: reads on a pooled connection of the lane's database.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Collection
from concurrent.futures import Future, InvalidStateError
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from nodes.storage import queries
from shard_store.backend import Conn, Database, FlushFailed
from shard_store.batch_writer import Item
from shard_store.schema import MESSAGE, MessageRow

MAX_KEYS = 50_000
"""Settled keys remembered per database (retries of older sends are looked up)."""
MAX_KEY_BYTES = 32 << 20
"""... and the most body text those keys' rows may hold."""
RETRY_WINDOW_S = 60.0
"""How long after a send a retry of it usually comes: a client resends an unacknowledged send
until it is acknowledged (tui.outbox), within seconds unless it was cut off from every gateway
for longer. An older retry of a key no longer remembered is not looked up; the message
table's unique key still refuses it, failing its flush like a lost connection, and the
conversation is then loaded again and looked up for a window."""
MAX_RECENT_KEYS = 1_000_000
"""Key hashes kept per database for one window (~60 MB with the previous window's)."""
MAX_CONVS = 100_000
"""Conversations remembered per database (idle ones are dropped and loaded again on use)."""
KEY_OVERHEAD_BYTES = 600
"""Roughly what a remembered key costs besides its body (the future, the row, the entry)."""

BATCH_ROWS = Histogram(
    "soim_storage_batch_rows",
    "Rows stamped per write batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
LOADS = Counter(
    "soim_storage_sequencer_loads_total",
    "Conversations whose last seq was loaded from the database",
)
LOOKUPS = Counter(
    "soim_storage_sequencer_lookups_total",
    "Sends looked up by their key in the database before stamping",
)
RETRIES = Counter(
    "soim_storage_sequencer_retries_total", "Retried sends settled by the sequencer without a write"
)

_Key = tuple[int, int, str]
"""(conv_id, sender, client_msg_id)."""


@dataclass(slots=True)
class _Conv:
    """What the sequencer knows of one conversation."""

    next_seq: int
    lookup_until: float
    """Until this time (monotonic) a send whose key is unknown here may be a retry of a message
    stored before the load, and is looked up in the database: one retry window after a load
    that found messages; 0 when the conversation was empty."""
    gen: int
    """Which load this is: key table entries of other loads are stale."""
    last: Future[MessageRow] | None = None
    """The future of the last row stamped: once it is done, nothing of this conversation is
    in flight (flushes of a database settle in order)."""


@dataclass
class _Lane:
    """The state of one database's conversations (touched by one writer thread at a time)."""

    convs: OrderedDict[int, _Conv] = field(default_factory=OrderedDict)
    keys: OrderedDict[_Key, tuple[int, Future[MessageRow] | tuple, int]] = field(
        default_factory=OrderedDict
    )
    """Key -> (generation, the row's future while in flight, then the stored row as a plain
    tuple, bytes), oldest first. Settled rows are kept as plain tuples of ints and strings,
    which the garbage collector does not track: a table of futures (a lock and a condition
    each) made every full collection of the node take hundreds of milliseconds. An OrderedDict,
    because the oldest key is evicted for each new one once the table is full: a plain dict
    finds its first entry by skipping every slot deleted since it was last resized (~25 µs per
    eviction at 50,000 keys, against ~1 µs)."""
    key_bytes: int = 0
    recent: set[int] = field(default_factory=set)
    """Hashes of the keys remembered in this retry window …"""
    older: set[int] = field(default_factory=set)
    """… and in the one before: a retry of an evicted key is found among them (and looked up)."""
    rotated_at: float = field(default_factory=time.monotonic)
    lookup_all_until: float = 0.0
    """Hashes were dropped before their window ended (too many keys): until then, every
    unknown key is looked up."""
    in_flight: deque[tuple[_Key, Future[MessageRow]]] = field(default_factory=deque)
    """Keys stamped and not yet seen settled, in stamping order (flushes settle in order)."""


class Sequencer:
    """Seqs and dedup for the writer's lanes (one state per database)."""

    def __init__(
        self,
        max_keys: int = MAX_KEYS,
        max_key_bytes: int = MAX_KEY_BYTES,
        max_convs: int = MAX_CONVS,
        retry_window_s: float = RETRY_WINDOW_S,
        max_recent_keys: int = MAX_RECENT_KEYS,
    ) -> None:
        self.max_keys = max_keys
        self.retry_window_s = retry_window_s
        self.max_recent_keys = max_recent_keys
        self.max_key_bytes = max_key_bytes
        self.max_convs = max_convs
        self._lanes: dict[int, _Lane] = {}
        self._gens = itertools.count(1)

    def conversations(self) -> int:
        """Conversations held, over all databases (approximate while lanes stamp)."""
        return sum(len(lane.convs) for lane in list(self._lanes.values()))

    def forget(self, db: Database, conv_ids: Collection[int] | None) -> None:
        lane = self._lane(db)
        if conv_ids is None:
            lane.convs.clear()
            lane.keys.clear()
            lane.in_flight.clear()
            lane.key_bytes = 0
            return
        for conv_id in conv_ids:
            lane.convs.pop(conv_id, None)  # its keys are stale now: a new load, a new gen

    def assign(self, db: Database, items: list[Item]) -> list[Item]:
        lane = self._lane(db)
        convs, keys = lane.convs, lane.keys
        _settle(lane)
        self._rotate(lane)
        self._load(db, lane, items)
        out: list[Item] = []
        for row, table_no, fut in items:
            conv = convs[row.conv_id]
            key = (row.conv_id, row.sender, row.client_msg_id)
            prior = keys.get(key)
            if prior is not None and prior[0] == conv.gen:
                _follow(prior[1], fut)
                RETRIES.inc()
                continue
            stamped = MessageRow(row[0], conv.next_seq, *row[2:])  # ~3x faster than _replace
            out.append((stamped, table_no, fut))
            conv.next_seq += 1
            conv.last = fut
            self._remember(lane, key, conv.gen, fut, row)
            lane.in_flight.append((key, fut))
        self._trim(lane, {row.conv_id for row, _, _ in items})
        BATCH_ROWS.observe(len(out))
        return out

    def _lane(self, db: Database) -> _Lane:
        lane = self._lanes.get(db.index)
        if lane is None:
            lane = self._lanes[db.index] = _Lane()
        return lane

    def _remember(
        self, lane: _Lane, key: _Key, gen: int, ref: Future[MessageRow] | tuple, row: MessageRow
    ) -> None:
        old = lane.keys.pop(key, None)  # re-inserted at the end: the table stays oldest first
        if old is not None:
            lane.key_bytes -= old[2]
        size = KEY_OVERHEAD_BYTES + len(row.body)
        lane.keys[key] = (gen, ref, size)
        lane.key_bytes += size
        lane.recent.add(hash(key))

    def _load(self, db: Database, lane: _Lane, items: list[Item]) -> None:
        """Load unknown conversations, then look up keys their states cannot vouch for."""
        convs = lane.convs
        unknown: dict[str, list[int]] = {}
        for row, table_no, _ in items:
            if row.conv_id not in convs:
                unknown.setdefault(f"{MESSAGE.name}_{table_no}", []).append(row.conv_id)
        with ExitStack() as stack:
            opened: list[Conn] = []

            def conn() -> Conn:  # a pooled connection (a ping) only when there is a query
                if not opened:
                    opened.append(stack.enter_context(db.connection()))
                return opened[0]

            for table, conv_ids in unknown.items():
                for conv_id, last in queries.last_seqs(
                    conn(), table, list(dict.fromkeys(conv_ids))
                ).items():
                    until = 0.0 if last == 0 else time.monotonic() + self.retry_window_s
                    convs[conv_id] = _Conv(last + 1, until, next(self._gens))
                    LOADS.inc()
            lookup: dict[str, dict[queries.Key, None]] = {}
            now = time.monotonic()
            everything = lane.lookup_all_until > now
            recent, older = lane.recent, lane.older
            for row, table_no, _ in items:
                conv = convs[row.conv_id]
                key = (row.conv_id, row.sender, row.client_msg_id)
                known = lane.keys.get(key)
                if known is not None and known[0] == conv.gen:
                    continue
                if (
                    everything
                    or conv.lookup_until > now
                    or ((h := hash(key)) in recent or h in older)
                ):
                    lookup.setdefault(f"{MESSAGE.name}_{table_no}", {})[key] = None
            for table, keys in lookup.items():
                LOOKUPS.inc(len(keys))
                for stored in queries.messages_by_key(conn(), db.kind, table, list(keys)):
                    key = (stored.conv_id, stored.sender, stored.client_msg_id)
                    self._remember(lane, key, convs[stored.conv_id].gen, tuple(stored), stored)

    def _rotate(self, lane: _Lane) -> None:
        """Start a new window of key hashes each retry window (or sooner when too many)."""
        now = time.monotonic()
        full = len(lane.recent) > self.max_recent_keys
        if full or now - lane.rotated_at >= self.retry_window_s:
            if full:  # the older hashes go before their time: look everything up meanwhile
                lane.lookup_all_until = now + self.retry_window_s
            lane.older, lane.recent, lane.rotated_at = lane.recent, set(), now

    def _trim(self, lane: _Lane, used: set[int]) -> None:
        convs, keys = lane.convs, lane.keys
        for conv_id in used:
            convs.move_to_end(conv_id)
        while len(keys) > self.max_keys or lane.key_bytes > self.max_key_bytes:
            key, (_, ref, size) = next(iter(keys.items()))
            if isinstance(ref, Future) and not ref.done():
                break  # still in flight: evict once it settled
            del keys[key]
            lane.key_bytes -= size
        for _ in range(len(convs) - self.max_convs):
            conv_id, conv = next(iter(convs.items()))
            if conv.last is not None and not conv.last.done():
                break  # the least recently used is still in flight; trim later
            del convs[conv_id]


def _settle(lane: _Lane) -> None:
    """Swap the futures of settled rows for plain tuples: the stored row when its flush
    committed; a failed row's entry goes (its conversation is loaded again, a new generation)."""
    keys, convs, in_flight = lane.keys, lane.convs, lane.in_flight
    while in_flight and in_flight[0][1].done():
        key, fut = in_flight.popleft()
        conv = convs.get(key[0])
        if conv is not None and conv.last is fut:
            conv.last = None
        entry = keys.get(key)
        if entry is None or entry[1] is not fut:
            continue  # evicted, or stamped again since
        if fut.cancelled() or fut.exception() is not None:
            del keys[key]
            lane.key_bytes -= entry[2]
        else:
            keys[key] = (entry[0], tuple(fut.result()), entry[2])


def _follow(original: Future[MessageRow] | tuple, retry: Future[MessageRow]) -> None:
    """Settle `retry` as `original` settles (at once if it already has)."""
    if not isinstance(original, Future):
        retry.set_result(MessageRow._make(original))
        return

    def copy(done: Future[MessageRow]) -> None:
        with suppress(InvalidStateError):
            if done.cancelled():
                retry.set_exception(FlushFailed("the original send was cancelled; retry"))
            elif (err := done.exception()) is not None:
                retry.set_exception(err)
            else:
                retry.set_result(done.result())

    original.add_done_callback(copy)
