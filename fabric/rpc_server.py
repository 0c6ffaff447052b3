"""The RPC server: serves registered methods on a ROUTER socket.

Role: receive REQUEST envelopes from DEALER peers, dispatch to handlers by method name, send one
REPLY per request (a payload, or an ErrorCode with a safe detail — never a traceback).
Peer sockets: a bound ROUTER (Curve server); peers are `RpcClient` DEALERs.

Handlers take `(request, call)` and return the reply message. Hot handlers are plain functions
answered in the same batch pass. A handler may instead return an asyncio Future that something
else settles (the gateway's batched sends): its reply joins the others settled in the same loop
iteration in one batch, and a sweep cancels it once the request's deadline has passed. Any other
awaitable runs as a task bounded by the request's deadline. A handler raises `RpcError` to
answer with an error code.
Bad frames are counted by reason and answered with an error code (request id 0 when the header
did not parse); they never stop the loop. An optional `gate(identity, method, peer_key,
peer_addr)` may refuse a request before it is parsed (the gateway: log in first, this
connection's key, rate limits; a node: revoked keys); with a gate (or `meta=True`) every request
carries its connection's metadata (`Call.peer_key`, `peer_addr`, `peer_fd`, see
`fabric.batch_io.Meta`), read only then. `own_deadline_s` replaces the caller's deadline by the
server's own (for clients, whose clocks are not trusted). `on_sent(replies)`, if given, hears
every batch of replies just handed to the socket (the gateway counts bytes per client).
Requests may also come from elsewhere than the socket (`dispatch`: the gateway's WebSocket
plane); `elsewhere`, if set, takes the replies addressed to such identities before the rest
goes to the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import zmq
import zmq.asyncio
from google.protobuf.message import Message

from fabric import envelope, id_range, metrics, timing
from fabric.batch_io import NO_META, Batch, Meta, Reader, send_batch
from fabric.methods import Method, RpcError
from schema import common_pb2 as pb

log = logging.getLogger(__name__)
_REQUEST = pb.REQUEST
_ROUTED_FRAMES = 1 + envelope.N_FRAMES  # the peer's routing id, then the envelope
_decode_frame = envelope.decode_frame
_parse_payload = envelope.parse_payload
_check_ids = id_range.check
_time = time.time

Handler = Callable[[Any, "Call"], Message | Awaitable[Message]]
Gate = Callable[[bytes, Method, bytes, str], int]
"""Called with (identity, method, peer_key, peer_addr) before a request is parsed; a non-OK
ErrorCode refuses it. peer_key is the connection's z85 Curve public key (the ZAP User-Id),
peer_addr its IP (b"" and "" when the connection carries no metadata)."""


@dataclass(slots=True)
class Call:
    """What a handler knows about the request besides its payload."""

    identity: bytes
    header: pb.Header
    peer_key: bytes = b""
    """The connection's z85 Curve public key (read only by a server with metadata on)."""
    peer_addr: str = ""
    """The connection's peer IP address."""
    peer_fd: int = -1
    """The file descriptor of the connection's TCP socket in this process."""

    @property
    def deadline_s(self) -> float:
        """The caller's absolute deadline, in time.time() seconds."""
        return self.header.deadline_ms / 1000.0


class RpcServer:
    """Serves methods on a bound ROUTER socket until `serve()` is cancelled."""

    def __init__(
        self,
        sock: zmq.asyncio.Socket,
        node_id: str,
        max_bytes: int,
        name: str = "rpc",
        gate: Gate | None = None,
        own_deadline_s: float | None = None,
        meta: bool = False,
        on_sent: Callable[[list[list[bytes]]], None] | None = None,
        check_ids: bool = True,
    ) -> None:
        self.sock = sock
        self.check_ids = check_ids
        self.on_sent = on_sent
        self.gate = gate
        self.meta = meta or gate is not None
        self.own_deadline_s = own_deadline_s
        self.node_id = node_id
        self.max_bytes = max_bytes
        self.name = name
        self._handlers: dict[str, tuple[Method, Handler, bool]] = {}
        """Per method name: the method, its handler, and whether its request can hold an id
        (a uint64 that `id_range.check` reads; `check_ids` checks only those)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._in = metrics.FRAMES_IN.labels(name)
        self._out = metrics.FRAMES_OUT.labels(name)
        self._served_children: dict[tuple[str, int], Any] = {}
        self._answered: dict[str, int] = {}  # OK replies per method in this batch pass
        self._encoder = envelope.Encoder(node_id)
        self._awaiting: dict[asyncio.Future[Message], tuple[bytes, pb.Header]] = {}
        self._settled_out: list[list[bytes]] = []  # replies of futures settled, not yet sent
        self._flush_soon = False  # a _flush_settled is scheduled for this loop iteration
        self.elsewhere: Callable[[list[list[bytes]]], list[list[bytes]]] | None = None
        """Sends the replies whose identity is not on the socket; returns the others."""

    def register(self, method: Method, handler: Handler) -> None:
        """Serve `method` with `handler`."""
        self._handlers[method.name] = (method, handler, id_range.may_hold_ids(method.request))

    async def serve(self) -> None:
        """Receive, dispatch and reply forever (cancel to stop)."""
        if self.meta:
            reader = Reader(self.sock, self._requests_meta, timing.PIPELINE_BATCH, meta=True)
        else:
            reader = Reader(self.sock, self._requests, timing.PIPELINE_BATCH)
        reader.start()
        try:
            await self._expire()  # the reader does the work, from the loop's FD callback
        finally:
            reader.close()

    async def _expire(self) -> None:
        """Cancel the futures whose request's deadline has passed (one timer for all)."""
        while True:
            await asyncio.sleep(timing.RPC_EXPIRY_SWEEP_S)  # the sweep period
            now_ms = time.time() * 1000.0
            for future in [
                f for f, (_, header) in self._awaiting.items() if header.deadline_ms <= now_ms
            ]:
                future.cancel()

    def _requests(self, batch: Batch) -> None:
        """Answer a batch of requests (the Reader calls this)."""
        self._answer(batch, repeat(NO_META, len(batch)))

    def _requests_meta(self, batch: Batch, metas: list[Meta]) -> None:
        """`_requests` for a batch read with each message's connection metadata."""
        self._answer(batch, metas)

    def dispatch(self, batch: Batch, metas: list[Meta]) -> None:
        """Answer requests that came from elsewhere than the socket, as if read from it (each
        [identity, envelope frame], with its connection's `Meta`); `elsewhere` sends their
        replies."""
        self._requests_meta(batch, metas)

    async def close(self) -> None:
        """Cancel handler tasks still running."""
        for task in list(self._tasks):
            task.cancel()
        for future in list(self._awaiting):
            future.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)

    def _answer(self, batch: Batch, metas: Iterable[Meta]) -> None:
        """Answer each request of `batch` (with its connection's `Meta`), then send the replies
        due now in one batch. Each request's path is inline: at ~3 us of Python per request, a
        call per request and its attribute reads cost as much as any of its checks."""
        self._in.inc(len(batch))
        now_ms = _time() * 1000.0
        handlers = self._handlers
        max_bytes = self.max_bytes
        gate = self.gate
        own_deadline_s = self.own_deadline_s
        check_ids = self.check_ids
        answered = self._answered
        reply = self._encoder.reply
        replies: list[list[bytes]] = []
        for frames, meta in zip(batch, metas, strict=True):
            identity = frames[0]
            try:
                if len(frames) != _ROUTED_FRAMES:
                    raise envelope.frame_count_error(len(frames) - 1)
                header, payload = _decode_frame(frames[1], max_bytes)
            except envelope.EnvelopeError as err:
                replies.append(self._bad_frame(identity, err))
                continue
            if header.kind != _REQUEST:
                metrics.BAD_FRAMES.labels(self.name, "not_request").inc()
                continue
            entry = handlers.get(header.method)
            if entry is None:
                replies.append(self._unknown_method(identity, header))
                continue
            method, handler, holds_ids = entry
            if gate is not None:
                code = gate(identity, method, meta[0], meta[1])
                if code != pb.OK:
                    replies.append(self._error(identity, header, code, ""))
                    continue
            if own_deadline_s is not None:
                header.deadline_ms = int((_time() + own_deadline_s) * 1000)
            elif header.deadline_ms < now_ms:
                self._served(method.name, pb.DEADLINE_EXCEEDED)
                continue  # the caller has already given up
            try:
                request = _parse_payload(method.request, payload)
                if holds_ids and check_ids:  # INVALID_ARGUMENT for an id past a BIGINT column
                    _check_ids(request)
                result = handler(request, Call(identity, header, *meta))
            except envelope.EnvelopeError as err:  # the payload, or a handler's nested one
                metrics.BAD_FRAMES.labels(self.name, err.reason.value).inc()
                replies.append(self._error(identity, header, pb.BAD_REQUEST, err.detail))
                continue
            except RpcError as err:
                replies.append(self._error(identity, header, err.code, err.detail))
                continue
            except Exception:
                log.exception("handler %s failed", header.method)
                replies.append(self._error(identity, header, pb.INTERNAL, "handler failed"))
                continue
            if isinstance(result, Message):
                name = method.name
                answered[name] = answered.get(name, 0) + 1
                replies.append([identity, reply(header.request_id, result.SerializeToString())])
            else:
                self._later(identity, header, result)
        self._send(replies)
        self._count_answered()

    def _bad_frame(self, identity: bytes, err: envelope.EnvelopeError) -> list[bytes]:
        """The error reply to a frame that failed `decode_frame` (request id 0 when its header
        did not parse), counted by reason."""
        metrics.BAD_FRAMES.labels(self.name, err.reason.value).inc()
        rid = err.header.request_id if err.header is not None else 0
        return [
            identity,
            *envelope.error_reply(rid, err.reason.error_code(), err.detail, sender=self.node_id),
        ]

    def _unknown_method(self, identity: bytes, header: pb.Header) -> list[bytes]:
        """UNKNOWN_METHOD's reply, naming the method asked for (counted as "<unknown>")."""
        self._served("<unknown>", pb.UNKNOWN_METHOD)
        return [
            identity,
            *envelope.error_reply(
                header.request_id, pb.UNKNOWN_METHOD, header.method[:64], sender=self.node_id
            ),
        ]

    def _later(self, identity: bytes, header: pb.Header, result: Awaitable[Message]) -> None:
        """A handler's reply that is not ready: a future settled elsewhere (its reply joins the
        others of its loop iteration), or any other awaitable, run as a task."""
        if isinstance(result, asyncio.Future):
            self._awaiting[result] = (identity, header)
            result.add_done_callback(self._settled)
            return
        task = asyncio.ensure_future(self._finish(identity, header, result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(
        self, identity: bytes, header: pb.Header, pending: Awaitable[Message]
    ) -> None:
        remaining = header.deadline_ms / 1000.0 - time.time()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                result = await pending
            out = [identity, self._encoder.reply(header.request_id, result.SerializeToString())]
            self._served(header.method, pb.OK)
        except TimeoutError:
            self._served(header.method, pb.DEADLINE_EXCEEDED)
            return
        except RpcError as err:
            out = self._error(identity, header, err.code, err.detail)
        except Exception:
            log.exception("handler %s failed", header.method)
            out = self._error(identity, header, pb.INTERNAL, "handler failed")
        self._send([out])

    def _settled(self, future: asyncio.Future[Message]) -> None:
        """Queue the reply of a handler's future, sent with the others of this iteration."""
        identity, header = self._awaiting.pop(future)
        if future.cancelled() or header.deadline_ms < time.time() * 1000.0:
            self._served(header.method, pb.DEADLINE_EXCEEDED)
            return  # the caller has given up
        error = future.exception()
        if error is None:
            answered = self._answered
            answered[header.method] = answered.get(header.method, 0) + 1
            out = [
                identity,
                self._encoder.reply(header.request_id, future.result().SerializeToString()),
            ]
        elif isinstance(error, RpcError):
            out = self._error(identity, header, error.code, error.detail)
        else:
            log.error("handler %s failed", header.method, exc_info=error)
            out = self._error(identity, header, pb.INTERNAL, "handler failed")
        self._settled_out.append(out)
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush_settled)

    def _flush_settled(self) -> None:
        self._flush_soon = False
        out, self._settled_out = self._settled_out, []
        self._send(out)
        self._count_answered()

    def _send(self, replies: list[list[bytes]]) -> None:
        if self.elsewhere is not None:
            replies = self.elsewhere(replies)
        dropped = send_batch(self.sock, replies)
        if self.on_sent is not None:
            self.on_sent(replies)
        self._out.inc(len(replies) - dropped)
        if dropped:
            metrics.BAD_FRAMES.labels(self.name, "reply_dropped").inc(dropped)

    def _error(self, identity: bytes, header: pb.Header, code: int, detail: str) -> list[bytes]:
        self._served(header.method, code)
        return [
            identity,
            *envelope.error_reply(header.request_id, code, detail, sender=self.node_id),
        ]

    def _count_answered(self) -> None:
        """Count the pass's OK replies, one counter update per method rather than per reply."""
        for method, n in self._answered.items():
            self._served(method, pb.OK, n)
        self._answered.clear()

    def _served(self, method: str, code: int, n: int = 1) -> None:
        child = self._served_children.get((method, code))
        if child is None:
            known = code in pb.ErrorCode.values()
            name = pb.ErrorCode.Name(pb.ErrorCode.ValueType(code)) if known else str(code)
            child = metrics.RPC_SERVED.labels(method, name)
            self._served_children[(method, code)] = child
        child.inc(n)
