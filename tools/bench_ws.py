"""A WebSocket client connection for the bench's worker processes (`soimctl bench chat
--transport ws|wsjson`).

Role: `WsConn` speaks a gateway's WebSocket plane through websockets' sans-I/O client protocol
on a plain TCP socket — with the binary subprotocol `soim.proto` (each message one envelope
frame, as on the ZeroMQ plane) or with `soim.json` (each message one JSON text frame, sent and
received as str; `tools.bench_wire` writes and reads both) — and offers the few calls of a
zmq.Socket that `tools.bench_clients` makes — `send`, `recv` (NOBLOCK: zmq.Again when nothing
is buffered),
`get(FD)` / `get(EVENTS)` for its epoll set, `fileno()` for a zmq.Poller, `close` — so a worker
drives WebSockets and DEALERs with the same synchronous loop. `recv_ready()` returns every frame
already received (a zmq.Poller sees the TCP socket, not what was read ahead of it). A NOBLOCK
send (the worker's keepalive Ping) first takes what has arrived: the gateway pings every
WebSocket each 20 s and closes one whose pong is 20 s late, and a setup step may leave a
connection unread that long.
Peer sockets: one TCP connection to a gateway's SOIM_WEB_PORT.
"""

from __future__ import annotations

import contextlib
import socket
from collections import deque

import zmq
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

_NOBLOCK = int(zmq.NOBLOCK)
_FD = int(zmq.FD)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
READ_BYTES = 1 << 18
PROTO = Subprotocol("soim.proto")
JSON = Subprotocol("soim.json")


class WsClosed(zmq.ZMQError):
    """The gateway closed the WebSocket (or never opened it)."""


class WsConn:
    """One WebSocket to a gateway, opened at once (blocking handshake): binary envelope frames
    with `soim.proto`, JSON text frames (str) with `soim.json`."""

    def __init__(self, url: str, subprotocol: Subprotocol = PROTO) -> None:
        uri = parse_uri(url)
        if uri.secure:
            raise WsClosed("the bench speaks plain ws:// only (its non-blocking reads)")
        self._sock = socket.create_connection((uri.host, uri.port), timeout=10)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(None)
        self._proto = ClientProtocol(uri, subprotocols=[subprotocol], max_size=None)
        self._frames: deque[bytes | str] = deque()
        self._proto.send_request(self._proto.connect())
        self._flush()
        while self._proto.state is State.CONNECTING:
            self._read(0)
        if self._proto.state is not State.OPEN:
            raise WsClosed(f"WebSocket handshake with {url} failed: {self._proto.handshake_exc}")
        if self._proto.subprotocol != subprotocol:
            raise WsClosed(
                f"{url} answered subprotocol {self._proto.subprotocol}, not {subprotocol}"
            )

    def send(self, frame: bytes | str, flags: int = 0) -> None:
        """Send one frame — bytes: a binary one, str: a text one — blocking until the kernel
        took it; with NOBLOCK, take what has arrived first (answering pings)."""
        if flags & _NOBLOCK:
            with contextlib.suppress(zmq.Again):
                while True:
                    self._read(socket.MSG_DONTWAIT)
        if isinstance(frame, str):
            self._proto.send_text(frame.encode())
        else:
            self._proto.send_binary(frame)
        self._flush()

    def recv(self, flags: int = 0) -> bytes | str:
        """The next frame received; with NOBLOCK zmq.Again when none is here yet."""
        while not self._frames:
            self._read(socket.MSG_DONTWAIT if flags & _NOBLOCK else 0)
        return self._frames.popleft()

    def recv_ready(self) -> list[bytes | str]:
        """The next frame and every other one already received (blocking for the first)."""
        frames = [self.recv()]
        while self._frames:
            frames.append(self._frames.popleft())
        return frames

    def get(self, option: int) -> int:
        """FD: the TCP socket's; EVENTS: POLLIN when frames are buffered here."""
        if option == _FD:
            return self._sock.fileno()
        if option == _EVENTS:
            return _POLLIN if self._frames else 0
        raise ValueError(f"option {option} is not emulated")

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self, linger: int = 0) -> None:
        self._sock.close()

    def _read(self, flags: int) -> None:
        try:
            data = self._sock.recv(READ_BYTES, flags)
        except BlockingIOError:
            raise zmq.Again() from None
        if not data:
            self._proto.receive_eof()
            raise WsClosed("the gateway closed the WebSocket")
        self._proto.receive_data(data)
        for event in self._proto.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.BINARY:
                self._frames.append(bytes(event.data))
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._frames.append(bytes(event.data).decode())
            elif isinstance(event, Response) and self._proto.handshake_exc is not None:
                raise WsClosed(f"WebSocket handshake refused: {self._proto.handshake_exc}")
        self._flush()  # pongs, and the answer to a close
        if self._proto.state is State.CLOSED and not self._frames:
            raise WsClosed(f"the gateway closed the WebSocket: {self._proto.close_exc}")

    def _flush(self) -> None:
        for data in self._proto.data_to_send():
            if data:
                self._sock.sendall(data)
