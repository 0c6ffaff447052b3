"""Events over PUB/SUB: a node's publisher and a subscriber that listens to many peers.

Role: fire-and-forget fan-out — heartbeats, goodbyes, cache invalidations, and (with a gateway
id as topic) deliveries from routers to gateways. Frames are `[topic, *envelope]` with an EVENT
envelope whose method names the payload type.
Peer sockets: `Publisher` binds a PUB (Curve server); `Subscriber` is one SUB (Curve client)
connected to the PUB of every peer it follows, read by a `fabric.batch_io.Reader`: each batch
queued on it is dispatched straight from the loop's callback for its FD, with no task, Future or
loop iteration per event (a gateway takes one delivery per 1:1 message this way).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import zmq
import zmq.asyncio
from google.protobuf.message import Message

from fabric import envelope, metrics, timing
from fabric.batch_io import Batch, Reader, plain, send_now

log = logging.getLogger(__name__)

EventHandler = Callable[[bytes, envelope.Envelope], None]


class Publisher:
    """A bound PUB socket; `publish` never blocks (a slow subscriber loses events at its HWM)."""

    def __init__(self, sock: zmq.asyncio.Socket, node_id: str, name: str = "events") -> None:
        self.sock = sock
        self.node_id = node_id
        self._plain = plain(sock)
        self._out = metrics.FRAMES_OUT.labels(name)

    def publish(self, topic: bytes, method: str, msg: Message) -> None:
        """Send one event under `topic`."""
        self.publish_raw(topic, method, msg.SerializeToString())

    def publish_raw(self, topic: bytes, method: str, payload: bytes) -> None:
        """Send one event whose payload is already serialized."""
        if send_now(self._plain, [topic, *envelope.event(method, payload, self.node_id)]):
            self._out.inc()
        else:
            metrics.BAD_FRAMES.labels("events_out", "hwm_drop").inc()


class Subscriber:
    """One SUB socket following many publishers; handlers run per topic prefix on the loop."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        *,
        max_bytes: int = timing.MAX_FRAME_BYTES,
        secure: Callable[[zmq.asyncio.Socket], None] | None = None,
        name: str = "events_in",
    ) -> None:
        self.sock: zmq.asyncio.Socket = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, timing.HWM_MESSAGES)
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_bytes + timing.FRAME_SLACK_BYTES)
        if secure is not None:
            secure(self.sock)
        self.max_bytes = max_bytes
        self.name = name
        self._handlers: list[tuple[bytes, EventHandler]] = []
        self._connected: set[str] = set()
        self._reader = Reader(self.sock, self._batch, timing.TAKE_MAX_BATCH)
        self._in = metrics.FRAMES_IN.labels(name)

    def on(self, topic: bytes, handler: EventHandler) -> None:
        """Subscribe to `topic` (a prefix) and call `handler(topic, envelope)` for each event."""
        self._handlers.append((topic, handler))
        self.sock.setsockopt(zmq.SUBSCRIBE, topic)
        self._reader.check()

    def connect(self, endpoint: str, server_key: bytes | None = None) -> None:
        """Follow the publisher at `endpoint` (idempotent), whose Curve server key is
        `server_key` (None: the key `secure` set). libzmq copies socket options into each
        connection when it is made, so every publisher can have a key of its own."""
        if endpoint not in self._connected:
            if server_key is not None:
                self.sock.curve_serverkey = server_key
            self.sock.connect(endpoint)
            self._connected.add(endpoint)
            self._reader.check()

    def disconnect(self, endpoint: str) -> None:
        """Stop following `endpoint`."""
        if endpoint in self._connected:
            self._connected.discard(endpoint)
            with contextlib.suppress(zmq.ZMQError):
                self.sock.disconnect(endpoint)
            self._reader.check()

    def start(self) -> None:
        """Start reading (on the running loop)."""
        self._reader.start()

    async def close(self) -> None:
        """Stop reading and close the socket."""
        self._reader.close()
        self.sock.close(linger=0)

    def _batch(self, batch: Batch) -> None:
        self._in.inc(len(batch))
        for frames in batch:
            self._dispatch(frames)

    def _dispatch(self, frames: list[bytes]) -> None:
        topic = frames[0]
        try:
            env = envelope.decode(frames[1:], self.max_bytes)
        except envelope.EnvelopeError as err:
            metrics.BAD_FRAMES.labels(self.name, err.reason.value).inc()
            return
        for prefix, handler in self._handlers:
            if topic.startswith(prefix):
                try:
                    handler(topic, env)
                except Exception:
                    log.exception("event handler for %r failed", prefix)
                    metrics.BAD_FRAMES.labels(self.name, "handler_failed").inc()
