"""The storage node: sequenced, group-committed message writes; delivery, history, sync, receipts.

Role: own the conversations that hash to this node on the ring of live storage nodes
(`fabric.ring.Ring` over conv_id, itself included) and serve the Storage rpcs of `api.STORAGE`:
StoreBatch (`intake`: checked items, message ids, the sequencing batch writer, acks after
COMMIT), History / Sync / GroupReadCounts (`reads`, from the database), Search (`search`, the
full-text index), Cursors (`cursors`).
The writer's `Sequencer` (`sequencer`) stamps seqs and settles retried sends in the writer's
builder thread; a ring change that adds a node makes it start each conversation again from
the database (`BatchWriter.resequence`; a node leaving moves only its own conversations, of which
the survivors hold no state, so theirs go on undisturbed), and the (conv_id, seq) primary key
fails the flush of a racing former owner. Committed messages go to routers (`fanout`) and move
their senders' cursors.
Until it has seen a live directory a starting node refuses StoreBatch with UNAVAILABLE (it may
hear of gateways first, and a group message stored then would find no members to push to).
The heartbeat load is the writer's backlog. SIGTERM: intake closes, the writer flushes what it
took (within WRITER_CLOSE_S), the last pushes leave, the store closes.
Peer sockets: those of `fabric.node.Node` — the RPC ROUTER (gateways call it), the events PUB
(heartbeats), the events SUB (peers' heartbeats; directories' CacheInvalidations, topic "inv"),
peer DEALERs to routers (Deliver) and directories (members, accounts, conversations) — plus the
store's database connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import REGISTRY, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily
from prometheus_client.registry import Collector

from fabric.config import Config, ConfigError
from fabric.membership import Peer
from fabric.methods import RpcError
from fabric.node import Node
from fabric.readiness import DbCheck, missing_roles, unsettled
from fabric.ring import LiveRing
from fabric.rpc_server import Call
from nodes.storage.amends import Amends, edit_window_ms
from nodes.storage.cursors import Cursors
from nodes.storage.fanout import PushForwarder, Stored
from nodes.storage.intake import Intake, Reply
from nodes.storage.msg_ids import STEP, MsgIds
from nodes.storage.people import People
from nodes.storage.reads import Reads
from nodes.storage.search import Search
from nodes.storage.sequencer import Sequencer
from nodes.storage.workers import Workers
from schema import cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import INVALIDATION_TOPIC
from schema.contracts.storage import STORAGE
from shard_store.backend import StoreUnavailable
from shard_store.batch_writer import BatchWriter
from shard_store.segments import SegmentAllocator
from shard_store.settings import SettingError, StoreSettings
from shard_store.store import Store

WRITER_CLOSE_S = 2.0
"""At SIGTERM the writer flushes for at most this long (the node has 4 s in all)."""
FANOUT_CLOSE_S = 0.5
"""... and the last pushes get this long to leave."""
OWNED_CACHE = 200_000
"""Ownership answers cached (conversation ids) before the cache starts over."""

BACKLOG = Gauge("soim_storage_writer_backlog", "Rows submitted, not yet taken into a flush")
COMMIT_SECONDS = Histogram(
    "soim_storage_commit_seconds",
    "Time a flush's transaction took (INSERTs and COMMIT)",
    buckets=(
        0.0005,
        0.001,
        0.002,
        0.003,
        0.005,
        0.0075,
        0.01,
        0.015,
        0.02,
        0.03,
        0.05,
        0.1,
        0.25,
        1.0,
    ),
)
CONVERSATIONS = Gauge(
    "soim_storage_sequencer_conversations", "Conversations whose next seq is held in memory"
)


class _WriterStats(Collector):
    """The batch writer's counters as Prometheus counters."""

    def __init__(self, writer: BatchWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[CounterMetricFamily]:
        s = self.writer.stats()
        for name, doc, value in (
            ("flushes", "Flushes committed", s.flushes),
            ("flushed_rows", "Rows in committed flushes", s.rows),
            ("failed_flushes", "Flushes failed (or failed behind a failed one)", s.failed_flushes),
            ("failed_rows", "Rows of failed flushes", s.failed_rows),
        ):
            family = CounterMetricFamily(f"soim_storage_writer_{name}", doc)
            family.add_metric([], value)
            yield family


class StorageNode(Node):
    """A storage node."""

    role = "storage"

    def __init__(self, cfg: Config) -> None:
        try:  # a bad store setting stops the node before it loads keys or binds a socket
            self.store_settings = StoreSettings.from_env(cfg.extra)
        except SettingError as err:
            raise ConfigError(err.var, err.problem) from None
        super().__init__(cfg)
        self._live = LiveRing(self.membership, "storage", include=self.node_id)
        self.ring = self._live.current()
        self._owned: dict[int, bool] = {}
        self.store: Store | None = None
        self.segments: SegmentAllocator | None = None
        self.writer: BatchWriter | None = None
        self.intake: Intake | None = None
        self.fanout: PushForwarder | None = None
        self.cursors: Cursors | None = None
        self.workers = Workers()
        self.sequencer = Sequencer()
        self._stats: _WriterStats | None = None
        self.db_check: DbCheck | None = None
        self._serving = False  # a directory has been seen: StoreBatch is served

    # ---- node hooks
    async def on_start(self) -> None:
        settings = self.store_settings
        try:
            self.store = store = await asyncio.to_thread(Store.from_settings, settings)
        except SettingError as err:
            raise ConfigError(err.var, err.problem) from None
        except StoreUnavailable as err:
            raise ConfigError("SOIM_DB", str(err).removeprefix("SOIM_DB: ")) from None
        self.db_check = DbCheck(store.ping)
        self.segments = SegmentAllocator(store, default_step=STEP)
        ids = MsgIds(self.segments, self.workers.reads)
        ids.take_now(0)  # start the first refill now
        self.writer = writer = BatchWriter.from_settings(
            store, settings, sequencer=self.sequencer, on_commit=COMMIT_SECONDS.observe
        )
        people = People(self.membership, self.peers)
        self.fanout = PushForwarder(self.membership, self.peers, people)
        self.fanout.start()
        self.cursors = Cursors(store, self.workers, self.fanout)
        amends = Amends(store, self.workers, edit_window_ms(self.cfg.extra))
        self.intake = Intake(writer, ids, self.owns, people, amends, self._committed)
        reads = Reads(store, self.workers, people)
        search = Search(store, self.workers, people)
        for name, handler in (
            ("StoreBatch", self._store_batch),
            ("History", reads.history),
            ("Sync", reads.sync),
            ("Cursors", self.cursors.cursors),
            ("GroupReadCounts", reads.group_read_counts),
            ("Search", search.search),
        ):
            self.rpc.register(STORAGE[name], handler)
        self.subscriber.on(INVALIDATION_TOPIC, people.invalidated)
        BACKLOG.set_function(lambda: writer.backlog)
        CONVERSATIONS.set_function(self.sequencer.conversations)
        self._stats = _WriterStats(writer)
        REGISTRY.register(self._stats)

    async def on_stop(self) -> None:
        if self.intake is not None:
            self.intake.open = False
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close, WRITER_CLOSE_S)
        if self.intake is not None:
            self.intake.settle()  # the last commits' acks and pushes
        if self.fanout is not None:
            await self.fanout.close(FANOUT_CLOSE_S)
        if self.cursors is not None:
            await self.cursors.close()
        self.workers.close()
        if self.segments is not None:
            await asyncio.to_thread(self.segments.close)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        if self._stats is not None:
            REGISTRY.unregister(self._stats)

    async def ready(self) -> str | None:
        """Ready while its database answers, a directory is alive (fan-out, History and
        read counts ask it for group members and account names) and the storage ring is
        settled (no peer knows a node this one has not admitted yet); routers are optional:
        messages are stored, and synced later, without them."""
        if self.db_check is None:
            return "starting"
        return (
            await self.db_check.reason()
            or missing_roles(self.membership, ("directory",))
            or unsettled(self.membership)
        )

    def load(self) -> float:
        return float(self.writer.backlog) if self.writer is not None else 0.0

    def _store_batch(self, req: cluster_pb2.StoreBatchRequest, call: Call) -> Reply:
        """StoreBatch, refused with UNAVAILABLE (the gateway's clients retry) until this node
        has seen a live directory: a node just started may hear of gateways first, and what it
        stored then would have had its group pushes lost for want of the members."""
        if not self._serving:
            waiting = missing_roles(self.membership, ("directory",))
            if waiting:
                raise RpcError(pb.UNAVAILABLE, f"storage node starting: {waiting}")
            self._serving = True
        assert self.intake is not None
        return self.intake.store_batch(req, call)

    def peer_added(self, peer: Peer) -> None:
        if peer.role == "storage":
            self._ring_changed()

    def peer_removed(self, peer: Peer) -> None:
        if peer.role == "storage":
            self._ring_changed()

    # ---- ownership
    def owns(self, conv_id: int) -> bool:
        """Is `conv_id` this node's on its current ring? (Answers are cached per ring.)"""
        owned = self._owned.get(conv_id)
        if owned is None:
            if len(self._owned) >= OWNED_CACHE:
                self._owned.clear()
            owned = self._owned[conv_id] = self.ring.owner(conv_id) == self.node_id
        return owned

    def _ring_changed(self) -> None:
        ring = self._live.current()
        if ring is self.ring:
            return
        joined = not ring.members <= self.ring.members
        self.ring = ring
        self._owned.clear()
        if not joined:
            # nodes only left: each conversation this node owned stays here (a consistent-hash
            # ring moves only the leavers' conversations), those it takes over it has no state
            # of, so nothing in flight fails and its own conversations never pause
            self.log.info("storage ring now %s", ",".join(sorted(ring.members)))
            return
        if self.writer is not None:
            self.writer.resequence()
        self.log.info(
            "storage ring now %s: every conversation reloads its last seq",
            ",".join(sorted(ring.members)),
        )

    def _committed(self, stored: list[Stored]) -> None:
        assert self.fanout is not None and self.cursors is not None
        self.fanout.messages(stored)
        self.cursors.own(stored)
