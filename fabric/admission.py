"""Admission: hints say where a node might be; a peer joins only over an authenticated link.

Role: take hints of where nodes of this cluster might be — discovery records (already
signature-checked by `fabric.discovery`), the seeds of SOIM_SEEDS, the peers other members list
in their heartbeats, and a node that probed us and said where it listens — and admit the ones
that prove who they are. A hint names an RPC endpoint and a Curve key; if the cluster
authorizes the key, dial the endpoint as a Curve client with that server key and ask
`fabric.Status`: only a peer that completes the handshake (so holds that key's secret) and
answers is handed to the membership, with the identity it states over that link (node id, role,
endpoints, gateway key, start time) and the key it proved. A hint with an unauthorized key is
never dialled. Probes are bounded (MAX_PROBES_IN_FLIGHT at once, a failed target is tried again
no sooner than PEER_PROBE_RETRY_S), because hints are hostile input. Each probe says where this
node's own RPC endpoint is, so the peer admits us back: a node joining through one seed is
known to it at once and, through its heartbeats, to everyone within a few beats.
Peer sockets: one short-lived DEALER per probe (an `RpcClient`), closed after the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable

import zmq.asyncio

from fabric import timing
from fabric.discovery import DiscoveryError, NodeInfo, valid_endpoint
from fabric.membership import Membership
from fabric.methods import STATUS, RpcError
from fabric.rpc_client import RpcClient
from fabric.security import Security
from schema import fabric_pb2

log = logging.getLogger(__name__)

Target = tuple[str, str]  # (rpc endpoint, z85 server key)


class Admission:
    """Checks hints and admits the peers that prove who they are."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        security: Security,
        cluster: str,
        self_id: str,
        membership: Membership,
    ) -> None:
        self.ctx = ctx
        self.security = security
        self.cluster = cluster
        self.self_id = self_id
        self.membership = membership
        self.own_rpc = ""  # this node's RPC endpoint, told to the peers it probes
        self.refused: Counter[str] = Counter()  # why hints were not admitted
        self._hints: dict[Target, str] = {}  # target -> node id it claims ("": unknown)
        self._records: set[Target] = set()  # hints from discovery records (they say goodbye)
        self._seeds: set[Target] = set()  # tried until admitted, for as long as we run
        self._heard: dict[Target, float] = {}  # gossip and probe-back hints: last heard
        self._own: set[Target] = set()  # targets that turned out to be this node
        self._failed: dict[Target, float] = {}  # monotonic time of the last failed probe
        self._probing: dict[Target, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(timing.MAX_PROBES_IN_FLIGHT)
        self._retrier: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Retry failed hints and seeds now and then (a node may have been starting up)."""
        if self._retrier is None:
            self._retrier = asyncio.ensure_future(self._retry_failed())

    async def close(self) -> None:
        """Stop probing."""
        tasks = [*self._probing.values(), *([self._retrier] if self._retrier else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._probing.clear()
        self._retrier = None

    def known_ids(self) -> set[str]:
        """Node ids that hints claim (soimctl counts them while its view settles)."""
        return {node_id for node_id in self._hints.values() if node_id} - {self.self_id}

    # ---- hints
    def hint(self, info: NodeInfo) -> None:
        """A discovery record appeared or changed: check where it points."""
        target = (info.endpoints.get("rpc", ""), info.public_key)
        if not target[0]:
            self.refused["no_rpc_endpoint"] += 1
            return
        if self._remember(target, info.node_id):
            self._records.add(target)
            self._consider(target, force=True)

    def gone(self, info: NodeInfo) -> None:
        """A record went away. Liveness is the heartbeats' business: forget the hint only."""
        target = (info.endpoints.get("rpc", ""), info.public_key)
        if target in self._records:
            self._records.discard(target)
            self._forget(target)

    def seed(self, endpoint: str, key_name: str = "") -> None:
        """Dial `endpoint` (SOIM_SEEDS) with the authorized key called `key_name`, or with
        every authorized key when no name is given, until a peer there is admitted."""
        keys = self.security.authorized_names()
        for key, name in keys.items():
            if not key_name or name == key_name:
                target = (endpoint, key.decode())
                self._seeds.add(target)
                self._remember(target, "")
                self._consider(target, force=True)
        if key_name and key_name not in keys.values():
            log.error("seed %s names key %r, which is not authorized", endpoint, key_name)

    def gossip(self, known: Iterable[fabric_pb2.KnownPeer]) -> None:
        """A member's heartbeat lists the peers it admitted: hints, tried if new."""
        for peer in list(known)[: timing.MAX_KNOWN_PEERS]:
            self.heard(peer.rpc, peer.key, peer.node_id)

    def heard(self, endpoint: str, key: str, node_id: str = "") -> None:
        """A hint from a member (its heartbeat, or its probe of us saying where it listens)."""
        if not valid_endpoint(endpoint) or node_id == self.self_id:
            return
        target = (endpoint, key)
        if self._remember(target, node_id):
            self._heard[target] = time.monotonic()
            self._consider(target)

    def retry(self, node_id: str) -> None:
        """Peer `node_id` died: another hint of that id may be its successor."""
        for target, claimed in list(self._hints.items()):
            if claimed == node_id:
                self._consider(target, force=True)

    def keys_changed(self, revoked: frozenset[bytes], added: frozenset[bytes]) -> None:
        """Forget hints that carry revoked keys; probe those whose key was just authorized."""
        for target in list(self._hints):
            key = target[1].encode()
            if key in revoked:
                self._seeds.discard(target)
                self._records.discard(target)
                self._forget(target)
            elif key in added:
                self._consider(target, force=True)

    def _remember(self, target: Target, node_id: str) -> bool:
        """Keep `target` as a hint (bounded); False when there is no room."""
        if target not in self._hints and len(self._hints) >= timing.MAX_DISCOVERY_RECORDS:
            self.refused["too_many"] += 1
            return False
        if node_id or target not in self._hints:
            self._hints[target] = node_id
        return True

    def _forget(self, target: Target) -> None:
        if target not in self._seeds and target not in self._records:
            self._hints.pop(target, None)
            self._heard.pop(target, None)
            self._failed.pop(target, None)

    # ---- probing
    def _consider(self, target: Target, force: bool = False) -> None:
        endpoint, key = target
        if not self.security.authorized(key.encode()):
            self.refused["unauthorized_key"] += 1
            return
        if target in self._own or target in self._probing or self.membership.admitted_at(endpoint):
            return
        failed = self._failed.get(target)
        if (
            not force
            and failed is not None
            and (time.monotonic() - failed < timing.PEER_PROBE_RETRY_S)
        ):
            return
        self._probing[target] = asyncio.ensure_future(self._probe(target))

    async def _probe(self, target: Target) -> None:
        endpoint, key = target
        try:
            async with self._slots:
                reply = await self._status(endpoint, key.encode())
            info = self._identity(reply, key) if reply is not None else None
            if info is None:
                self._failed[target] = time.monotonic()
            elif info.node_id == self.self_id:
                self._own.add(target)  # a seed list that names this node too
            else:
                self._failed.pop(target, None)
                self._hints[target] = info.node_id
                self.membership.admit(info)
        except Exception:
            log.exception("probing %s failed", endpoint)
            self._failed[target] = time.monotonic()
        finally:
            self._probing.pop(target, None)

    async def _status(self, endpoint: str, key: bytes) -> fabric_pb2.StatusReply | None:
        """The peer's Status over a Curve link to server key `key`; None if it never answers."""
        try:
            client = RpcClient(
                self.ctx,
                endpoint,
                node_id=self.self_id,
                max_bytes=timing.MAX_FRAME_BYTES,
                name="admission",
                secure=lambda sock: self.security.cluster_client(sock, key),
            )
        except ValueError:  # the key was revoked meanwhile
            self.refused["unauthorized_key"] += 1
            return None
        client.start()
        try:
            reply: fabric_pb2.StatusReply = await client.call(
                STATUS,
                fabric_pb2.StatusRequest(rpc_endpoint=self.own_rpc),
                timeout=timing.PEER_PROBE_TIMEOUT_S,
            )
            return reply
        except RpcError:
            self.refused["no_answer"] += 1
            return None
        finally:
            await client.close()

    def _identity(self, reply: fabric_pb2.StatusReply, key: str) -> NodeInfo | None:
        """The peer as it describes itself over the authenticated link; None if unusable."""
        told = NodeInfo(
            node_id=reply.node_id,
            role=reply.role,
            cluster=reply.cluster,
            version=reply.version,
            host=reply.host,
            endpoints=dict(reply.endpoints),
            metrics_port=reply.metrics_port,
            public_key=key,
            client_key=reply.client_key,
            started_at=reply.started_at,
        )
        try:
            info = NodeInfo.from_txt(told.to_txt())  # validated; unknown endpoints left out
        except DiscoveryError as err:
            self.refused[err.reason.value] += 1
            return None
        if info.cluster != self.cluster:
            self.refused["other_cluster"] += 1
            return None
        if "events" not in info.endpoints or "rpc" not in info.endpoints:
            self.refused["missing_endpoint"] += 1
            return None
        return info

    async def _retry_failed(self) -> None:
        while True:
            await asyncio.sleep(timing.PEER_PROBE_RETRY_S)  # the retry period
            horizon = time.monotonic() - timing.GOSSIP_FORGET_S
            for target, heard in list(self._heard.items()):
                if heard < horizon and not self.membership.admitted_at(target[0]):
                    self._forget(target)  # nobody mentions it any more
            for target in {*self._failed, *self._seeds}:
                if target in self._hints:
                    self._consider(target)
                else:
                    self._failed.pop(target, None)
