"""The RPC client: calls methods of one peer over a DEALER socket, many calls in flight.

Role: send REQUEST envelopes with a request id and an absolute deadline, match REPLY envelopes
back to their callers, fail calls whose deadline passes with TIMEOUT, and ask an idempotent
method again by a `fabric.retry` policy (`CALL` unless the caller owns the retries and passes
`ONCE`; a fresh request id per attempt, each attempt a share of the deadline).
EVENT frames the server pushes on the same connection (a gateway's pushes to a client) go to
`on_event`.
Peer sockets: one connected DEALER (Curve client) per peer ROUTER served by `RpcServer`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio
from google.protobuf.message import Message

from fabric import envelope, metrics, timing
from fabric.batch_io import Batch, Reader, send_frames
from fabric.methods import Method, RpcError
from fabric.retry import CALL, Policy, run
from schema import common_pb2 as pb

log = logging.getLogger(__name__)
_EVENT = pb.EVENT
_Pending = tuple["asyncio.Future[bytes]", float, str]
"""A call waiting for its reply: the caller's future (set to the reply's still-serialized payload,
or failed with the reply's error), when it expires (monotonic), the method."""
_Future = asyncio.Future
_decode_frame = envelope.decode_frame
_parse_payload = envelope.parse_payload
_monotonic = time.monotonic
_time = time.time


class RpcClient:
    """Calls one peer. Create, `start()`, `await call(...)`, `await close()`."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        *,
        node_id: str = "",
        max_bytes: int = timing.MAX_FRAME_BYTES,
        secure: Callable[[zmq.asyncio.Socket], None] | None = None,
        name: str = "rpc_client",
        on_event: Callable[[envelope.Envelope], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.node_id = node_id
        self.max_bytes = max_bytes
        self.name = name
        self.on_event = on_event
        self.sock: zmq.asyncio.Socket = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, timing.SOCKET_LINGER_MS)
        self.sock.setsockopt(zmq.SNDHWM, timing.HWM_MESSAGES)
        self.sock.setsockopt(zmq.RCVHWM, timing.HWM_MESSAGES)
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_bytes + timing.FRAME_SLACK_BYTES)
        try:
            if secure is not None:
                secure(self.sock)
            self.sock.connect(endpoint)
        except BaseException:
            self.sock.close(linger=0)
            raise
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._encoder = envelope.Encoder(node_id)
        self._outbox: list[bytes] = []
        self._flush_soon = False  # a _flush is scheduled for this loop iteration
        self._closed = False  # close() began: no more requests, sends or restarts
        self._reader = Reader(self.sock, self._replies, timing.PIPELINE_BATCH)
        self._loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Task[None]] = []
        self._in = metrics.FRAMES_IN.labels(name)
        self._out = metrics.FRAMES_OUT.labels(name)
        self._latency: dict[str, metrics.LatencyChild] = {}

    def start(self) -> None:
        """Start reading replies and the task that expires calls (not once closed)."""
        if not self._tasks and not self._closed:
            self._loop = asyncio.get_running_loop()
            self._reader.start()
            self._tasks = [asyncio.ensure_future(self._expire())]

    async def close(self) -> None:
        """Fail pending calls with UNAVAILABLE and close the socket; again, it does nothing.
        Requests still queued are dropped: a flush scheduled before the close finds it closed."""
        if self._closed:
            return
        self._closed = True
        self._outbox.clear()
        self._reader.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for fut, _, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(RpcError(pb.UNAVAILABLE, "client closed"))
        self._pending.clear()
        self.sock.close(linger=timing.SOCKET_LINGER_MS)

    @property
    def in_flight(self) -> int:
        """Calls waiting for a reply."""
        return len(self._pending)

    async def call(
        self,
        method: Method,
        request: Message,
        timeout: float | None = None,
        *,
        retry: Policy = CALL,
    ) -> Any:
        """Call `method`; return its reply message or raise RpcError (TIMEOUT at the deadline).

        An idempotent method is asked again by `retry`, within `timeout` (`fabric.retry`); a
        caller that retries the call itself passes `ONCE`. The common case — one attempt,
        answered — is one await on a future that the Reader's callback (`_replies`) sets.
        """
        if not self._tasks:
            self.start()
        started = _monotonic()
        deadline = started + (timing.RPC_DEFAULT_TIMEOUT_S if timeout is None else timeout)
        payload = request.SerializeToString()
        name = method.name
        tries = retry.tries(method.idempotency)
        try:
            try:  # the first attempt here: the common case costs no retry frame
                reply = await self._ask(
                    name, payload, deadline if tries == 1 else retry.until(deadline, tries, 0)
                )
            except RpcError as err:
                if tries == 1:
                    raise
                reply = await run(
                    lambda until: self._ask(name, payload, until),
                    policy=retry,
                    idempotency=method.idempotency,
                    deadline=deadline,
                    failed=err,
                )
            return _parse_payload(method.reply, reply)
        except RpcError as err:
            metrics.RPC_ERRORS.labels(
                name, pb.ErrorCode.Name(err.code) if err.code in pb.ErrorCode.values() else "?"
            ).inc()
            raise
        except envelope.EnvelopeError as err:
            raise RpcError(pb.BAD_REQUEST, f"bad reply: {err}") from None
        finally:
            latency = self._latency.get(name)
            if latency is None:
                latency = self._latency[name] = metrics.RPC_SECONDS.labels(name)
            latency.observe(_monotonic() - started)

    async def _ask(self, name: str, payload: bytes, until: float) -> bytes:
        """One attempt: a request with a fresh id, answered or expired by `until` (monotonic);
        return the reply's still-serialized payload."""
        if self._closed:  # closed meanwhile: no reader or expiry would end it
            raise RpcError(pb.UNAVAILABLE, f"{name}: client closed")
        rid = next(self._ids)
        fut: asyncio.Future[bytes] = _Future(loop=self._loop)
        self._pending[rid] = (fut, until, name)
        self._outbox.append(
            self._encoder.request(name, rid, int((_time() + until - _monotonic()) * 1000), payload)
        )
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush)
        try:
            return await fut
        except asyncio.CancelledError:
            self._pending.pop(rid, None)
            raise

    def _flush(self) -> None:
        """Send every request queued since the last pass, in one batch."""
        self._flush_soon = False
        outbox, self._outbox = self._outbox, []
        if not outbox or self._closed:
            return
        dropped = send_frames(self.sock, outbox)
        self._out.inc(len(outbox) - dropped)
        if dropped:
            metrics.BAD_FRAMES.labels(self.name, "hwm_drop").inc(dropped)

    async def _expire(self) -> None:
        """Fail calls whose deadline has passed with TIMEOUT (one timer for all calls)."""
        while True:
            await asyncio.sleep(timing.RPC_EXPIRY_SWEEP_S)  # the sweep period
            now = time.monotonic()
            expired = [rid for rid, (_, at, _) in self._pending.items() if at <= now]
            for rid in expired:
                fut, _, name = self._pending.pop(rid)
                if not fut.done():
                    fut.set_exception(RpcError(pb.TIMEOUT, f"{name} to {self.endpoint}"))

    def _replies(self, batch: Batch) -> None:
        """Hand each reply in `batch` to its caller (the Reader calls this)."""
        pending = self._pending
        max_bytes = self.max_bytes
        self._in.inc(len(batch))
        for frames in batch:
            try:
                if len(frames) != envelope.N_FRAMES:
                    raise envelope.frame_count_error(len(frames))
                header, payload = _decode_frame(frames[0], max_bytes)
            except envelope.EnvelopeError as err:
                metrics.BAD_FRAMES.labels(self.name, err.reason.value).inc()
                continue
            if header.kind == _EVENT:
                if self.on_event is not None:
                    self.on_event(envelope.Envelope(header, payload))
                continue
            call = pending.pop(header.request_id, None)
            if call is None or call[0].done():
                metrics.BAD_FRAMES.labels(self.name, "late_reply").inc()
                continue
            error = header.error
            if error:
                call[0].set_exception(RpcError(error, header.detail))
            else:
                call[0].set_result(payload)
        if not self._flush_soon:
            # the callers woken above run next and queue their next requests: send those in the
            # same loop iteration rather than one later
            self._flush_soon = True
            self._loop.call_soon(self._flush)
