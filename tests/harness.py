"""Test support: a whole so-im cluster of real node processes, and clients for it.

`Cluster` starts nodes of any role with one environment (unique cluster name, fresh keys, the
database and Redis of the test), waits until the cluster's membership shows them alive, and
opens `ClientSession`s against its gateways. Everything it started is stopped at the end.
`SharedCluster` keeps one running on an event loop of its own, for the tests of a module that
share it (a module-scoped fixture).
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import zmq.asyncio

from fabric import keys
from fabric.config import Config
from tests.processes import NodeProcess
from tests.support import async_wait_until
from tools.cluster_view import ClusterView
from tui.session import ClientSession

MAX_CLIENT_SOCKETS = 8192
"""Clients share one context; each holds a DEALER and a link monitor (libzmq's default cap is
1,023 sockets per context)."""

FAST_SCRYPT_N = "1024"
"""Tests hash passwords with a low scrypt cost so hundreds of logins stay quick."""

SHARED_START_S = 60.0
"""How long a `SharedCluster` may take to start."""
LOG_TAIL_LINES = 25
"""Lines of each node's log printed when a test of a running cluster fails."""

T = TypeVar("T")


class Cluster:
    """Nodes of one test cluster plus an observer view of it."""

    def __init__(self, tmp_path: Path, name: str, db: str, extra: Mapping[str, str] | None = None):
        self.tmp_path = tmp_path
        self.keys_dir = tmp_path / "keys"
        keys.generate(self.keys_dir)
        self.env: dict[str, str] = {
            "SOIM_CLUSTER": name,
            "SOIM_KEYS_DIR": str(self.keys_dir),
            "SOIM_DB": db,
            "SOIM_GATEWAY_PORT": "0",
            "SOIM_SCRYPT_N": FAST_SCRYPT_N,
            "SOIM_LOG_LEVEL": "INFO",
            **(extra or {}),
        }
        self.nodes: list[NodeProcess] = []
        self.view: ClusterView | None = None
        self.clients: list[ClientSession] = []
        self._ctx: zmq.asyncio.Context | None = None

    def start(self, role: str, count: int = 1, **env: str) -> list[NodeProcess]:
        """Start `count` nodes of `role` (extra SOIM_* settings as keyword arguments)."""
        started = [NodeProcess(role, {**self.env, **env}, self.tmp_path) for _ in range(count)]
        self.nodes += started
        return started

    async def start_all(
        self, routers: int = 1, gateways: int = 1, web: bool = False
    ) -> list[NodeProcess]:
        """A whole cluster, alive: a directory, `routers` routers, a storage node and
        `gateways` gateways (with a WebSocket plane on a free port if `web`), in that order."""
        web_env = {"SOIM_WEB_PORT": "0"} if web else {}
        nodes = (
            self.start("directory")
            + self.start("router", routers)
            + self.start("storage")
            + self.start("gateway", gateways, **web_env)
        )
        await self.wait_alive(nodes)
        await self.wait_ready([n for n in nodes if n.role == "gateway"])
        return nodes

    def alive(self, role: str | None = None) -> list[str]:
        """Node ids the observer sees alive."""
        assert self.view is not None
        return [p.node_id for p in self.view.membership.alive(role)]

    async def wait_alive(self, nodes: list[NodeProcess], timeout: float = 20.0) -> None:
        """Wait until every node of `nodes` is alive in the observer's view."""
        ids = {n.node_id for n in nodes}
        try:
            await async_wait_until(
                lambda: ids <= set(self.alive()),
                timeout=timeout,
                what=f"nodes alive: {sorted(ids - set(self.alive()))}",
            )
        except AssertionError:
            raise AssertionError(
                "\n".join(n.log()[-3000:] for n in nodes if n.node_id not in self.alive())
            ) from None

    async def wait_ready(self, nodes: list[NodeProcess], timeout: float = 20.0) -> None:
        """Wait until every node of `nodes` answers 200 on /readyz: a gateway, for one, has then
        admitted a directory, a router and a storage node itself (the observer seeing them alive
        does not mean the gateway does yet, and a login before that gets UNAVAILABLE)."""
        assert self.view is not None
        view = self.view

        def ready(node_id: str) -> bool:
            peer = view.membership.get(node_id)
            if peer is None:
                return False
            url = f"http://{peer.info.host}:{peer.info.metrics_port}/readyz"
            try:
                with urllib.request.urlopen(url, timeout=1.0) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        for node in nodes:
            await async_wait_until(
                lambda n=node: asyncio.to_thread(ready, n.node_id),
                timeout=timeout,
                interval=0.05,
                what=f"{node.node_id} ready",
            )

    def gateways(self) -> list[tuple[str, bytes]]:
        """(client endpoint, server key) of every live gateway, ordered by node id. The key is
        the one a client pins (gateway.key of the cluster's keys), never a record's."""
        assert self.view is not None
        pinned = keys.load_client_plane_public(self.keys_dir)
        return [(p.info.endpoints["client"], pinned) for p in self.view.membership.alive("gateway")]

    def web_urls(self) -> list[str]:
        """The WebSocket URL (ws://host:port/ws) of every live gateway that has one, ordered
        as `gateways()`."""
        assert self.view is not None
        alive = self.view.membership.alive("gateway")
        return [p.info.endpoints["web"] for p in alive if "web" in p.info.endpoints]

    def gateway_endpoints(self) -> list[str]:
        """A client's failover list: where the live gateways are."""
        return [endpoint for endpoint, _ in self.gateways()]

    async def client(self, gateway: int = 0, device: str = "test") -> ClientSession:
        """A connected (not yet logged in) client of the `gateway`-th live gateway."""
        endpoint, key = self.gateways()[gateway]
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
            self._ctx.max_sockets = MAX_CLIENT_SOCKETS
        session = ClientSession(
            endpoint, key, device=device, ctx=self._ctx, locator=self.gateway_endpoints
        )
        await session.connect()
        self.clients.append(session)
        return session

    async def close(self) -> None:
        """Close clients, then stop (and if need be kill) every node."""
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
        for node in self.nodes:
            node.stop()
        for node in self.nodes:
            node.wait(10)


@asynccontextmanager
async def running_cluster(
    tmp_path: Path, name: str, db: str, extra: Mapping[str, str] | None = None
) -> AsyncIterator[Cluster]:
    """A `Cluster` with its observer view open; everything is stopped on exit."""
    cluster = Cluster(tmp_path, name, db, extra)
    cfg = Config.from_env(cluster.env, role="test")
    try:
        async with ClusterView(cfg) as view:
            cluster.view = view
            try:
                yield cluster
            except BaseException:
                print(log_tails(cluster.nodes))  # shown with the failure (the logs may be gone)
                raise
            await cluster.close()
    finally:
        for node in cluster.nodes:
            node.kill()
            node.wait(5)


def log_tails(nodes: list[NodeProcess], lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines above DEBUG of every node's log, for a failed test's report."""
    parts = []
    for node in nodes:
        shown = [line for line in node.log().splitlines() if " DEBUG " not in line][-lines:]
        parts.append(f"--- {node.node_id} (pid {node.pid}), last {len(shown)} lines")
        parts.extend(shown)
    return "\n".join(parts)


class SharedCluster:
    """A `running_cluster`, started by `start(cluster)`, on an event loop of its own thread until
    `close()`: the tests of one module share it, each running its coroutine there with `run`.
    Only for tests that stop no node and whose accounts and group names differ."""

    def __init__(
        self,
        tmp_path: Path,
        name: str,
        db: str,
        start: Callable[[Cluster], Awaitable[object]],
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.cluster: Cluster | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self.loop.run_until_complete,
            args=(self._main(tmp_path, name, db, start, extra),),
            name=f"cluster-{name}",
        )
        self._thread.start()
        if not self._ready.wait(SHARED_START_S) or self._error is not None:
            self.close()
            raise AssertionError(f"the shared cluster did not start: {self._error!r}")

    async def _main(
        self,
        tmp_path: Path,
        name: str,
        db: str,
        start: Callable[[Cluster], Awaitable[object]],
        extra: Mapping[str, str] | None,
    ) -> None:
        self._stop = self.loop.create_future()
        try:
            async with running_cluster(tmp_path, name, db, extra) as cluster:
                self.cluster = cluster
                await start(cluster)
                self._ready.set()
                await self._stop
        except BaseException as err:  # reported by __init__
            self._error = err
        finally:
            self._ready.set()

    def run(self, test: Callable[[Cluster], Coroutine[Any, Any, T]], timeout: float = 110.0) -> T:
        """Run `test(cluster)` on the cluster's loop; its result (or its exception)."""
        assert self.cluster is not None
        future = asyncio.run_coroutine_threadsafe(test(self.cluster), self.loop)
        try:
            return future.result(timeout)
        except BaseException:  # a failure, or pytest-timeout: leave nothing running
            future.cancel()
            raise

    def close(self) -> None:
        """Stop every node, then the loop."""
        if self._stop is not None and not self._stop.done():
            self.loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(60)
        if not self._thread.is_alive():
            self.loop.close()
