"""Admission: discovery records are hints; a peer joins only over an authenticated link.

Role: take each discovery record of this cluster (already signature-checked by
`fabric.discovery`) as a hint of where a node might be. If the cluster authorizes the record's
Curve key, dial the record's RPC endpoint as a Curve client with that server key and ask
`fabric.Status`: only a peer that completes the handshake (so holds that key's secret) and
answers is handed to the membership, with the identity it states over that link (node id, role,
endpoints, gateway key, start time) and the key it proved. A record with an unauthorized key is
never dialled. Probes are bounded (MAX_PROBES_IN_FLIGHT at once, a failed target is tried again
no sooner than PEER_PROBE_RETRY_S), because records are hostile input.
Peer sockets: one short-lived DEALER per probe (an `RpcClient`), closed after the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import zmq.asyncio

from fabric import timing
from fabric.discovery import DiscoveryError, NodeInfo
from fabric.membership import Membership
from fabric.methods import STATUS, RpcError
from fabric.rpc_client import RpcClient
from fabric.security import Security
from schema import fabric_pb2

log = logging.getLogger(__name__)

Target = tuple[str, str]  # (rpc endpoint, z85 server key)


class Admission:
    """Checks discovery hints and admits the peers that prove who they are."""

    def __init__(self, ctx: zmq.asyncio.Context, security: Security, cluster: str,
                 self_id: str, membership: Membership) -> None:
        self.ctx = ctx
        self.security = security
        self.cluster = cluster
        self.self_id = self_id
        self.membership = membership
        self.refused: Counter[str] = Counter()  # why hints were not admitted
        self._hints: dict[Target, NodeInfo] = {}
        self._failed: dict[Target, float] = {}  # monotonic time of the last failed probe
        self._probing: dict[Target, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(timing.MAX_PROBES_IN_FLIGHT)
        self._retrier: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Retry failed hints now and then (a node may have been starting up)."""
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

    # ---- discovery callbacks
    def hint(self, info: NodeInfo) -> None:
        """A record appeared or changed: check where it points."""
        target = (info.endpoints.get("rpc", ""), info.public_key)
        if not target[0]:
            self.refused["no_rpc_endpoint"] += 1
            return
        if target not in self._hints and len(self._hints) >= timing.MAX_DISCOVERY_RECORDS:
            self.refused["too_many"] += 1
            return
        self._hints[target] = info
        self._consider(target, force=True)

    def gone(self, info: NodeInfo) -> None:
        """A record went away. Liveness is the heartbeats' business: forget the hint only."""
        target = (info.endpoints.get("rpc", ""), info.public_key)
        self._hints.pop(target, None)
        self._failed.pop(target, None)

    def retry(self, node_id: str) -> None:
        """Peer `node_id` died: another record of that id may be its successor."""
        for target, info in list(self._hints.items()):
            if info.node_id == node_id:
                self._consider(target, force=True)

    def keys_changed(self, revoked: frozenset[bytes], added: frozenset[bytes]) -> None:
        """Forget hints that carry revoked keys; probe those whose key was just authorized."""
        for target in list(self._hints):
            key = target[1].encode()
            if key in revoked:
                del self._hints[target]
                self._failed.pop(target, None)
            elif key in added:
                self._consider(target, force=True)

    # ---- probing
    def _consider(self, target: Target, force: bool = False) -> None:
        endpoint, key = target
        if not self.security.authorized(key.encode()):
            self.refused["unauthorized_key"] += 1
            return
        if self.membership.admitted(endpoint, key.encode()) or target in self._probing:
            return
        failed = self._failed.get(target)
        if not force and failed is not None and (
                time.monotonic() - failed < timing.PEER_PROBE_RETRY_S):
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
            else:
                self._failed.pop(target, None)
                self.membership.admit(info)
        except Exception:
            log.exception("probing %s failed", endpoint)
            self._failed[target] = time.monotonic()
        finally:
            self._probing.pop(target, None)

    async def _status(self, endpoint: str, key: bytes) -> fabric_pb2.StatusReply | None:
        """The peer's Status over a Curve link to server key `key`; None if it never answers."""
        try:
            client = RpcClient(self.ctx, endpoint, node_id=self.self_id,
                               max_bytes=timing.MAX_FRAME_BYTES, name="admission",
                               secure=lambda sock: self.security.cluster_client(sock, key))
        except ValueError:  # the key was revoked meanwhile
            self.refused["unauthorized_key"] += 1
            return None
        client.start()
        try:
            reply: fabric_pb2.StatusReply = await client.call(
                STATUS, fabric_pb2.StatusRequest(), timeout=timing.PEER_PROBE_TIMEOUT_S)
            return reply
        except RpcError:
            self.refused["no_answer"] += 1
            return None
        finally:
            await client.close()

    def _identity(self, reply: fabric_pb2.StatusReply, key: str) -> NodeInfo | None:
        """The peer as it describes itself over the authenticated link; None if unusable."""
        info = NodeInfo(node_id=reply.node_id, role=reply.role, cluster=reply.cluster,
                        version=reply.version, host=reply.host, endpoints=dict(reply.endpoints),
                        metrics_port=reply.metrics_port, public_key=key,
                        client_key=reply.client_key, started_at=reply.started_at)
        try:
            NodeInfo.from_txt(info.to_txt())
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
            for target in list(self._failed):
                if target in self._hints:
                    self._consider(target)
                else:
                    del self._failed[target]
