"""Batch I/O on zmq.asyncio sockets: take what is queued, send a batch without waiting.

Role: the receive and send halves of every so-im hot loop. A `Reader` hands each batch queued on
a socket to a callback, straight from the event loop's callback for the socket's FD (the RPC
client and server, the events subscriber); `send_batch(sock, messages)`
sends many multipart messages (`send_frames`, many one-frame messages) with NOBLOCK and then
re-arms whatever reads the socket; `send_now(sock, frames)` sends one message on a socket
nobody reads (a PUB). Works on any socket type (ROUTER, DEALER, PUB, SUB). On request
(`meta=True`) a ROUTER's messages come with the ZMQ metadata of their connection (`Meta`): the
ZAP User-Id (fabric.security's authenticator sets it to the peer's z85 Curve public key), the
Peer-Address (the peer's IP) and the file descriptor of the TCP connection the message arrived
on (SRCFD).

Only pyzmq's public API: the synchronous calls go through `plain(sock)`, a `zmq.Socket` that
shadows the asyncio socket's libzmq socket (`zmq.Socket.shadow(sock.underlying)`), one per
socket. Each pass uses plain int flags and Frames (whose `more` flag is cheaper than the
RCVMORE option) and no Future per message.

ZeroMQ's FD is edge-triggered: it signals that the socket's state changed, and any operation on
the socket (a send included) may consume that signal while input stays queued. So this module
owns every send and receive on a socket it reads: a socket has at most one `Reader` (`start`
refuses a second) and is sent on only through `send_batch` or `send_frames`, which look for
input after sending; whoever changes a read socket otherwise (a SUB's subscribe or connect)
calls `Reader.check()` after it. tests/fabric/test_batch_io.py checks that fabric/ and nodes/
send and receive on ZeroMQ sockets only here.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterable
from typing import cast

import zmq
import zmq.asyncio

_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_TYPE = int(zmq.TYPE)
_ROUTER = int(zmq.ROUTER)
_SRCFD = int(zmq.SRCFD)

Batch = list[list[bytes]]
Meta = tuple[bytes, str, int]
"""(peer key: the ZAP User-Id as z85 bytes, peer address: its IP, fd of its TCP connection);
(b"", "", -1) for a message that carries no metadata (inproc, or no ZAP handler)."""
NO_META: Meta = (b"", "", -1)

_readers: weakref.WeakKeyDictionary[zmq.asyncio.Socket, Reader] = weakref.WeakKeyDictionary()
_plains: weakref.WeakKeyDictionary[zmq.asyncio.Socket, zmq.Socket] = weakref.WeakKeyDictionary()


def plain(sock: zmq.asyncio.Socket) -> zmq.Socket:
    """The synchronous `zmq.Socket` on the same libzmq socket as `sock` (made once per socket;
    a shadow never closes the socket it shadows)."""
    shadow = _plains.get(sock)
    if shadow is None:
        shadow = _plains[sock] = zmq.Socket.shadow(sock.underlying)
    return shadow


def _events(sock: zmq.Socket) -> int:
    return cast(int, sock.get(_EVENTS))  # ZMQ_EVENTS is an int option


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
                user_id, address = part.get("User-Id"), part.get("Peer-Address")
                metas.append((str(user_id).encode(), str(address), part.get(_SRCFD)))
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
        self._shadow = plain(sock)
        self._on_batch = on_batch
        self._max_batch = max_batch
        self._routed = self._shadow.get(_TYPE) == _ROUTER
        if meta and not self._routed:
            raise ValueError("metadata is read on ROUTER sockets only")
        self._meta = meta
        self._fd: int = self._shadow.FD
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False  # inside _ready, which looks for input itself before it returns
        self._sent_meanwhile = False  # on_batch sent on the socket during this take's batch
        self._scheduled = False  # a _ready is queued on the loop

    def start(self) -> None:
        """Read on the running loop."""
        other = _readers.get(self.sock)
        if other is not None and other is not self:
            raise RuntimeError("this socket already has a Reader: one reader per socket")
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
        elif _events(self._shadow) & _POLLIN:
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
        emptied = False
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
                if not self._sent_meanwhile or not _events(shadow) & _POLLIN:
                    emptied = True
                    break
        finally:
            self._reading = False
            if not emptied:  # budget spent, or on_batch failed: the rest after other callbacks
                self.check()


def send_batch(sock: zmq.asyncio.Socket, messages: Iterable[list[bytes]]) -> int:
    """Send each multipart message now; return how many were dropped at the high-water mark.

    Sending may make libzmq read pending input and swallow the edge a reader waits on; reading
    EVENTS afterwards (through the socket's `Reader`, or the asyncio socket, which reschedules
    a pending receive) catches it.
    """
    send = plain(sock).send
    dropped = 0
    for frames in messages:
        try:
            for frame in frames[:-1]:
                send(frame, _MORE_NOBLOCK)
            send(frames[-1], _NOBLOCK)
        except zmq.Again:
            dropped += 1
    _after_send(sock)
    return dropped


def send_frames(sock: zmq.asyncio.Socket, frames: Iterable[bytes]) -> int:
    """`send_batch` for messages of one frame each, given as the frames themselves."""
    send = plain(sock).send
    dropped = 0
    for frame in frames:
        try:
            send(frame, _NOBLOCK)
        except zmq.Again:
            dropped += 1
    _after_send(sock)
    return dropped


def send_now(sock: zmq.Socket, frames: list[bytes]) -> bool:
    """Send one multipart message on `sock` (`plain` of a socket nobody reads: a PUB) with
    NOBLOCK; False if it was dropped at the high-water mark."""
    try:
        for frame in frames[:-1]:
            sock.send(frame, _MORE_NOBLOCK)
        sock.send(frames[-1], _NOBLOCK)
    except zmq.Again:
        return False
    return True


def _after_send(sock: zmq.asyncio.Socket) -> None:
    """Look for input after sending on `sock` (see `send_batch`)."""
    reader = _readers.get(sock)
    if reader is not None:
        reader.check()
    else:
        sock.get(_EVENTS)
