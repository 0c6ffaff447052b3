"""Batch I/O on zmq.asyncio sockets: take what is queued, send a batch without waiting.

Role: the receive and send halves of every so-im hot loop. A `Reader` hands each batch queued on
a socket to a callback, straight from the event loop's callback for the socket's FD (the RPC
client and server); `recv_ready(sock, max_batch)` waits once through pyzmq's asyncio socket,
then takes whatever else is already queued (the events subscriber); `send_batch(sock, messages)`
sends many multipart messages (`send_frames`, many one-frame messages) through the socket's
synchronous shadow with plain int flags and then re-arms whatever reads the socket. Works on
any socket type (ROUTER, DEALER, PUB, SUB). On request (`meta=True`) a ROUTER's messages come
with the ZMQ metadata of their connection (`Meta`): the ZAP User-Id (fabric.security's
authenticator sets it to the peer's z85 Curve public key), the Peer-Address (the peer's IP) and
the file descriptor of the TCP connection the message arrived on (SRCFD).

ZeroMQ's FD is edge-triggered: it signals that the socket's state changed, and any operation on
the socket (a send included) may consume that signal while input stays queued. So a socket with
a `Reader` or a pending `recv_ready` is sent on only through `send_batch` or `send_frames`, which
look for input after sending, and has one reader. Everything here bypasses pyzmq's per-call
conveniences (enum flags, RCVMORE lookups, the routing-id and group handling of `Socket.send`,
one Future per receive), which cost more than libzmq's own work at these message sizes.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterable

import zmq
import zmq.asyncio
import zmq.backend

_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_FD = int(zmq.FD)
_TYPE = int(zmq.TYPE)
_ROUTER = int(zmq.ROUTER)
_SRCFD = int(zmq.SRCFD)
_send = zmq.backend.Socket.send  # the plain send under zmq.Socket.send's routing_id/group layer

Batch = list[list[bytes]]
Meta = tuple[bytes, str, int]
"""(peer key: the ZAP User-Id as z85 bytes, peer address: its IP, fd of its TCP connection);
(b"", "", -1) for a message that carries no metadata (inproc, or no ZAP handler)."""
NO_META: Meta = (b"", "", -1)

_readers: weakref.WeakKeyDictionary[zmq.asyncio.Socket, Reader] = weakref.WeakKeyDictionary()


def take(sock: zmq.Socket, max_batch: int, routed: bool) -> Batch:
    """Up to `max_batch` multipart messages already queued on the plain socket `sock`.

    Parts are received as Frames, whose `more` flag is much cheaper to read than the RCVMORE
    option; a ROUTER's (`routed`) routing id, always followed by the message, as plain bytes.
    """
    recv = sock.recv
    batch: Batch = []
    try:
        while len(batch) < max_batch:
            parts = [recv(_NOBLOCK)] if routed else []
            part = recv(_NOBLOCK, copy=False)
            parts.append(part.bytes)
            while part.more:  # the rest of a multipart message is already here
                part = recv(_NOBLOCK, copy=False)
                parts.append(part.bytes)
            batch.append(parts)
    except zmq.Again:
        pass
    return batch


def take_meta(sock: zmq.Socket, max_batch: int, metas: list[Meta]) -> Batch:
    """`take` on a ROUTER, appending each message's `Meta` to `metas` (one per message)."""
    recv = sock.recv
    batch: Batch = []
    try:
        while len(batch) < max_batch:
            parts = [recv(_NOBLOCK)]
            part = recv(_NOBLOCK, copy=False)
            try:
                metas.append(
                    (part.get("User-Id").encode(), part.get("Peer-Address"), part.get(_SRCFD))
                )
            except zmq.ZMQError:  # a message from a connection without metadata
                metas.append(NO_META)
            parts.append(part.bytes)
            while part.more:
                part = recv(_NOBLOCK, copy=False)
                parts.append(part.bytes)
            batch.append(parts)
    except zmq.Again:
        pass
    return batch


class Reader:
    """Calls `on_batch(batch)` on the event loop whenever messages are queued on `sock`.

    One FD callback for the life of the reader: no task, Future or loop iteration per batch.
    A callback takes up to `max_batch` messages. A `take` that stops at an empty queue has
    libzmq re-arm the FD for the next message, so the callback is done unless `on_batch` sent
    on the socket meanwhile (which may consume that edge): then it reads EVENTS and takes on
    if input is queued. What is left past the budget waits for the loop's other callbacks.
    `start()` on the loop that owns the socket; `close()` before the socket is closed.
    With `meta=True` (a ROUTER only) the callback is `on_batch(batch, metas)`, one `Meta` per
    message.
    """

    def __init__(
        self,
        sock: zmq.asyncio.Socket,
        on_batch: Callable[..., None],
        max_batch: int,
        meta: bool = False,
    ) -> None:
        self.sock = sock
        self._shadow: zmq.Socket = sock._shadow_sock  # the plain socket behind the wrapper
        self._on_batch = on_batch
        self._max_batch = max_batch
        self._routed = self._shadow.get(_TYPE) == _ROUTER
        if meta and not self._routed:
            raise ValueError("metadata is read on ROUTER sockets only")
        self._meta = meta
        self._fd = self._shadow.get(_FD)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False  # inside _ready, which looks for input itself before it returns
        self._sent_meanwhile = False  # on_batch sent on the socket during this take's batch
        self._scheduled = False  # a _ready is queued on the loop

    def start(self) -> None:
        """Read on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._ready)
        _readers[self.sock] = self
        self._schedule()  # whatever was queued before the FD was watched

    def close(self) -> None:
        """Stop reading."""
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            _readers.pop(self.sock, None)
            self._loop = None

    def check(self) -> None:
        """Read soon if input is queued (after anything that may have consumed the FD's edge)."""
        if self._reading:  # the pass in progress looks before it ends
            self._sent_meanwhile = True
            return
        if self._loop is None or self._scheduled:
            return
        if self._shadow.closed:  # closed under us: at least stop watching its FD
            self.close()
        elif self._shadow.get(_EVENTS) & _POLLIN:
            self._schedule()

    def _schedule(self) -> None:
        assert self._loop is not None
        self._scheduled = True
        self._loop.call_soon(self._ready)

    def _ready(self) -> None:
        self._scheduled = False
        if self._loop is None:
            return
        if self._shadow.closed:
            self.close()
            return
        shadow = self._shadow
        left = self._max_batch
        drained = False
        self._reading = True
        try:
            while True:
                self._sent_meanwhile = False
                if self._meta:
                    metas: list[Meta] = []
                    batch = take_meta(shadow, left, metas)
                    if batch:
                        self._on_batch(batch, metas)
                else:
                    batch = take(shadow, left, self._routed)
                    if batch:
                        self._on_batch(batch)
                left -= len(batch)
                if not left:
                    break  # budget spent
                # take() met an empty queue: done, unless a send may have consumed the edge
                if not self._sent_meanwhile or not shadow.get(_EVENTS) & _POLLIN:
                    drained = True
                    break
        finally:
            self._reading = False
            if not drained:  # budget spent, or on_batch failed: the rest after other callbacks
                self.check()


async def recv_ready(sock: zmq.asyncio.Socket, max_batch: int) -> Batch:
    """Wait for one multipart message, then drain up to `max_batch` in total with NOBLOCK.

    The extra messages are read through the socket's synchronous shadow while no async recv is
    pending on it, so no asyncio reader can miss an edge: the next `await` checks EVENTS first.
    """
    first: list[bytes] = await sock.recv_multipart()
    shadow = sock._shadow_sock
    return [first, *take(shadow, max_batch - 1, shadow.get(_TYPE) == _ROUTER)]


def send_batch(sock: zmq.asyncio.Socket, messages: Iterable[list[bytes]]) -> int:
    """Send each multipart message now; return how many were dropped at the high-water mark.

    Sending may make libzmq read pending input and swallow the edge a reader waits on; reading
    EVENTS afterwards (through the socket's `Reader`, or the asyncio socket, which reschedules
    a pending `recv_ready`) catches it.
    """
    shadow = sock._shadow_sock
    dropped = 0
    for frames in messages:
        try:
            for frame in frames[:-1]:
                _send(shadow, frame, _MORE_NOBLOCK)
            _send(shadow, frames[-1], _NOBLOCK)
        except zmq.Again:
            dropped += 1
    _after_send(sock)
    return dropped


def send_frames(sock: zmq.asyncio.Socket, frames: Iterable[bytes]) -> int:
    """`send_batch` for messages of one frame each, given as the frames themselves."""
    shadow = sock._shadow_sock
    dropped = 0
    for frame in frames:
        try:
            _send(shadow, frame, _NOBLOCK)
        except zmq.Again:
            dropped += 1
    _after_send(sock)
    return dropped


def _after_send(sock: zmq.asyncio.Socket) -> None:
    """Look for input after sending on `sock` (see `send_batch`)."""
    reader = _readers.get(sock)
    if reader is not None:
        reader.check()
    else:
        sock.get(_EVENTS)
