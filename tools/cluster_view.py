"""A read-only window on a running cluster for soimctl: who is alive, and RPC clients to them.

Role: join the cluster as an observer — zeroconf browsing (no registration; only records signed
with the cluster secret), admission of the nodes that prove their keys, the heartbeat SUB and
the membership view, plus `PeerClients` for RPCs to nodes. It binds nothing.
Peer sockets: one events SUB connected to every admitted node's PUB, DEALERs to nodes' RPC
ROUTERs on demand (Curve clients with this host's node key, SOIM_NODE_KEY).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import zmq.asyncio

from fabric import keys, timing
from fabric.admission import Admission
from fabric.config import Config
from fabric.discovery import Discovery, record_key
from fabric.events import Subscriber
from fabric.membership import Membership, Peer
from fabric.peer_clients import PeerClients
from fabric.security import Security

T = TypeVar("T")
FIRST_ANSWERS_S = 0.5
"""Answers to the first mDNS query may take this long to come in."""
QUIET_S = 1.0
"""Without named roles, the view is settled once no new node appeared for this long (and the
view holds as many nodes as any node's heartbeat says it sees)."""


def config_for(args: dict[str, Any]) -> Config:
    """The environment's Config, with soimctl's --cluster applied when given."""
    env = dict(os.environ)
    cluster = args.get("--cluster")
    if cluster and not cluster.startswith("$"):
        env["SOIM_CLUSTER"] = cluster
    return Config.from_env(env, role="soimctl")


def with_view(
    args: dict[str, Any],
    job: Callable[[ClusterView], Awaitable[T]],
    roles: tuple[str, ...] = (),
    whole: bool = False,
) -> T:
    """Run `job(view)` on a settled view of the cluster (once a node of each of `roles` is
    alive, or when every discovered node has been heard; see `ClusterView.settle` for
    `whole`)."""

    async def main() -> T:
        async with ClusterView(config_for(args)) as view:
            await view.settle(float(args.get("--wait") or 5), roles, whole)
            return await job(view)

    return asyncio.run(main())


class ClusterView:
    """`async with ClusterView(cfg) as view: peers = await view.settle(2.0)`."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ctx = zmq.asyncio.Context()
        self.security = Security(self.ctx, cfg.keys_dir, cfg.node_key)
        own_public = self.security.node.public
        self.subscriber = Subscriber(
            self.ctx,
            max_bytes=timing.CLUSTER_MAX_FRAME_BYTES,
            secure=lambda sock: self.security.cluster_client(sock, own_public),
        )
        self.node_id = f"soimctl-{uuid.uuid4().hex[:8]}"
        self.membership = Membership(
            self.node_id,
            self.subscriber,
            on_removed=lambda peer: self.admission.retry(peer.node_id),
        )
        self.admission = Admission(
            self.ctx, self.security, cfg.cluster, self.node_id, self.membership
        )
        self.discovery = Discovery(
            cfg,
            self.admission.hint,
            self.admission.gone,
            self.admission.hint,
            signing_key=record_key(keys.load_secret(cfg.keys_dir, keys.CLUSTER_SECRET)),
        )
        self.peers = PeerClients(
            self.ctx,
            self.membership,
            self.node_id,
            timing.CLUSTER_MAX_FRAME_BYTES,
            self.security.cluster_client,
        )

    async def __aenter__(self) -> ClusterView:
        self.subscriber.start()
        self.membership.start()
        self.membership.on_known = self.admission.gossip
        self.admission.start()
        self.security.watch(self._keys_changed)
        if self.cfg.discovery != "seeds":
            await self.discovery.async_start()
        for seed in self.cfg.seeds:
            self.admission.seed(seed.endpoint, seed.key_name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.security.stop()
        await self.admission.close()
        await self.peers.close()
        await self.membership.close()
        await self.subscriber.close()
        await self.discovery.async_close()
        self.ctx.destroy(linger=0)

    def _keys_changed(self, revoked: frozenset[bytes], added: frozenset[bytes]) -> None:
        self.admission.keys_changed(revoked, added)
        self.membership.revoked(revoked)

    async def settle(
        self, wait_s: float, roles: tuple[str, ...] = (), whole: bool = False
    ) -> list[Peer]:
        """Live peers once a node of each of `roles` is alive, or when `wait_s` runs out.

        With `whole`, also once no live node's heartbeat sees more peers than the view holds:
        a command asking every node of a role (`soimctl users` asks every router) must not
        start while only some of them are admitted.

        Without roles, the view is settled once every discovered node has been heard, no new
        one appeared for QUIET_S, and no heard node sees more peers than the view holds (mDNS
        answers can come late; a node's heartbeat says how many peers it sees). A node is
        listed only after a heartbeat, so a node that crashed but whose mDNS record lingers
        is never shown; while other nodes still count it alive, settling takes `wait_s`.
        """
        deadline = time.monotonic() + wait_s
        quiet_since = time.monotonic() + FIRST_ANSWERS_S
        seen = 0
        while time.monotonic() < deadline:
            known = len(self.discovery.peers().keys() | self.admission.known_ids())
            if known != seen:
                seen, quiet_since = known, time.monotonic()
            alive = self.membership.alive()
            if roles:
                if all(self.membership.alive(r) for r in roles) and (
                    not whole or all(p.peers < len(alive) for p in alive)
                ):
                    break
            elif (
                0 < known <= len(alive)
                and time.monotonic() - quiet_since > QUIET_S
                and all(p.peers < len(alive) for p in alive)
            ):
                break
            await asyncio.sleep(0.05)  # polling the view until the deadline
        return self.membership.alive()
