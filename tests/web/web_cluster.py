"""Support for the WebSocket plane's tests: one real cluster per test module, and a minimal
WebSocket client of the plane.

`ModuleCluster` runs a `tests.harness.Cluster` (gateways with SOIM_WEB_PORT=0) on an event loop
of its own thread, so every test of a module shares it: `run(coro)` runs a coroutine there.
`WsClient` speaks the JSON frames of docs/websocket.md with the plain `websockets` client.
Peer sockets: the cluster's (see `tests.harness`) and the test's WebSocket connections.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect

from tests.harness import Cluster, running_cluster

T = TypeVar("T")
START_TIMEOUT_S = 60.0


class ModuleCluster:
    """A started cluster living on a background event loop until `close()`."""

    def __init__(
        self,
        tmp_path: Path,
        name: str,
        db: str,
        gateways: int = 2,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Future[None] | None = None
        self.cluster: Cluster | None = None
        self._args = (tmp_path, name, db, gateways, extra)
        self._thread = threading.Thread(target=self._run)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S) or self._error is not None:
            self.close()
            raise AssertionError(f"cluster did not start: {self._error!r}")

    def _run(self) -> None:
        self.loop.run_until_complete(self._main())
        left = asyncio.all_tasks(self.loop)
        for task in left:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    async def _main(self) -> None:
        tmp_path, name, db, gateways, extra = self._args
        self._stop = self.loop.create_future()
        try:
            async with running_cluster(tmp_path, name, db, extra) as cluster:
                self.cluster = cluster
                await cluster.start_all(gateways=gateways, web=True)
                self._started.set()
                await self._stop
        except BaseException as err:  # reported by __init__ or close
            self._error = err
            self._started.set()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run `coro` on the cluster's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop every node and the loop."""
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(30)


class WsClient:
    """A `soim.json` WebSocket: requests by method name, replies by id, pushes kept in order
    (and handed to `on_push` as they come, if set). Once the socket closes, the requests still
    waiting fail with ConnectionError."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pushes: list[dict[str, Any]] = []
        self.on_push: Callable[[dict[str, Any]], None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url: str, subprotocol: str = "soim.json", **kw: Any) -> WsClient:
        ws = await connect(url, subprotocols=[subprotocol], **kw)  # type: ignore[list-item]
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                frame = json.loads(text)
                if "push" in frame:
                    self.pushes.append(frame["push"])
                    if self.on_push is not None:
                        self.on_push(frame["push"])
                else:
                    waiter = self._waiting.pop(frame["id"], None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)
        finally:
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("the WebSocket closed"))
            self._waiting.clear()

    async def frame(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The whole answer frame ({"id", "body"} or {"id", "error"}) of one request."""
        rid = next(self._ids)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = waiter
        request: dict[str, Any] = {"id": rid, "method": method}
        if body is not None:
            request["body"] = body
        await self.ws.send(json.dumps(request))
        async with asyncio.timeout(15):
            return await waiter

    async def call(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The reply body; AssertionError on an error frame."""
        answer = await self.frame(method, body)
        assert "error" not in answer, f"{method}: {answer['error']}"
        return answer.get("body", {})

    async def error(self, method: str, body: dict[str, Any] | None = None) -> str:
        """The error code name the request is answered with."""
        answer = await self.frame(method, body)
        assert "error" in answer, f"{method} succeeded: {answer}"
        return answer["error"]["code"]

    async def closed(self, timeout: float = 15.0) -> None:
        """Wait until the gateway closes this WebSocket."""
        async with asyncio.timeout(timeout):
            await asyncio.gather(self._reader, return_exceptions=True)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
