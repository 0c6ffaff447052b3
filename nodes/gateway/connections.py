"""The client ROUTER's TCP connections: who is connected, since when, and closing one of them.

Role: follow the gateway's client socket through its libzmq monitor (ACCEPTED and DISCONNECTED
events name each connection by its file descriptor; every client message names the fd it came
on, `Call.peer_fd`), so the gateway can
- end a session the moment its connection goes away (`on_closed(fd)`);
- close connections that hold no session: over the cap per source address or in total (at
  once), or past the authentication deadline (SOIM_AUTH_DEADLINE_S);
- close one chosen connection (a kicked session, a reader that stopped reading);
- say how far a connection's peer is behind (`tcp_state`: bytes it acked, bytes our kernel
  still holds), for the cap on bytes queued per client (`nodes.gateway.backlog`).
libzmq has no stable call to close one connection of a ROUTER; `close` shuts the TCP socket
down under libzmq (shutdown(2), never close(2), so libzmq still owns and closes the fd), which
then sees end-of-stream, drops the connection and frees its queues. Before shutting an fd down
it checks that the fd is still the same TCP connection (same peer address and port), so a
reused fd is never touched.
Peer sockets: the monitor PAIR of the client ROUTER (inproc, created by libzmq).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import fcntl
import logging
import socket
import struct
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from fabric import metrics, timing
from nodes.gateway.options import GatewayOptions
from nodes.gateway.unauth import UnauthCount

log = logging.getLogger(__name__)
_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_MONITOR_STOPPED
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
_malloc_trim = getattr(_libc, "malloc_trim", None)
TRIM_AFTER_CLOSED = 256
"""Connections closed since the last malloc_trim(0) that make the sweep call it again."""
TCP_INFO_BYTES_ACKED = 120
"""Offset of the u64 tcpi_bytes_acked in Linux's struct tcp_info (since 4.1)."""
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close(2) resets, dropping queued bytes


@dataclass(slots=True)
class Conn:
    """One accepted TCP connection of the client socket."""

    fd: int
    addr: str
    port: int
    since: float
    """When it was accepted, or when its last session ended (its deadline counts from there)."""
    authenticated: bool = False


class Connections:
    """The client socket's connections by fd; `start()` on the loop, `close()` to stop."""

    def __init__(
        self,
        sock: zmq.asyncio.Socket,
        options: GatewayOptions,
        unauth: UnauthCount,
        on_closed: Callable[[int], None],
    ) -> None:
        self.options = options
        self.unauth = unauth
        self._on_closed = on_closed
        self._monitor: zmq.asyncio.Socket = sock.get_monitor_socket(_EVENTS)
        self._sock = sock
        self._by_fd: dict[int, Conn] = {}
        self._closed_since_trim = 0
        self._tasks: list[asyncio.Task[None]] = []

    def __len__(self) -> int:
        return len(self._by_fd)

    def start(self) -> None:
        """Follow the monitor and sweep for the authentication deadline."""
        self._tasks = [asyncio.ensure_future(self._follow()), asyncio.ensure_future(self._sweep())]

    async def close(self) -> None:
        """Stop following; close the monitor socket."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._monitor.close(linger=0)

    def authenticated(self, fd: int, yes: bool) -> None:
        """A session opened (`yes`) or ended on the connection `fd`."""
        conn = self._by_fd.get(fd)
        if conn is None or conn.authenticated == yes:
            return
        conn.authenticated = yes
        if yes:
            self.unauth.remove(conn.addr)
        else:
            conn.since = time.monotonic()
            self.unauth.add(conn.addr)

    def shut(self, fd: int, reason: str, reset: bool = False) -> bool:
        """Close the connection `fd` (see the module docstring); False if it is gone. With
        `reset` what our kernel still holds for the peer is dropped (TCP RST) rather than sent."""
        conn = self._by_fd.get(fd)
        if conn is None:
            return False
        try:
            peer = socket.socket(fileno=fd)
        except OSError:
            return False
        try:
            if peer.getpeername()[:2] != (conn.addr, conn.port):
                return False  # the fd now names something else
            if reset:
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            peer.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
        finally:
            peer.detach()  # libzmq owns the fd
        metrics.BAD_FRAMES.labels("client", f"closed_{reason}").inc()
        return True

    def tcp_state(self, fd: int) -> tuple[int, int] | None:
        """(bytes the peer's TCP acked, bytes our kernel still holds to send) of connection
        `fd`; None if it is gone or the kernel does not say."""
        conn = self._by_fd.get(fd)
        if conn is None:
            return None
        try:
            peer = socket.socket(fileno=fd)
        except OSError:
            return None
        try:
            if peer.getpeername()[:2] != (conn.addr, conn.port):
                return None  # the fd now names something else
            info = peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES_ACKED + 8)
            outq = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return None
        finally:
            peer.detach()  # libzmq owns the fd
        if len(info) < TCP_INFO_BYTES_ACKED + 8:
            return None  # a kernel older than 4.1
        return (struct.unpack_from("Q", info, TCP_INFO_BYTES_ACKED)[0], struct.unpack("i", outq)[0])

    # ---- the monitor
    async def _follow(self) -> None:
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())
            kind, fd = event["event"], event["value"]
            if kind == zmq.EVENT_ACCEPTED:
                self._accepted(fd)
            elif kind == zmq.EVENT_DISCONNECTED:
                self._gone(fd)
            elif kind == zmq.EVENT_MONITOR_STOPPED:
                return

    def _accepted(self, fd: int) -> None:
        try:
            peer = socket.socket(fileno=fd)
        except OSError:
            return  # already gone
        try:
            addr, port = peer.getpeername()[:2]
        except OSError:
            return
        finally:
            peer.detach()  # libzmq owns the fd
        old = self._by_fd.pop(fd, None)  # its DISCONNECTED was missed
        if old is not None and not old.authenticated:
            self.unauth.remove(old.addr)
        conn = Conn(fd=fd, addr=addr, port=port, since=time.monotonic())
        self._by_fd[fd] = conn
        over = self.unauth.add(addr)
        if over is not None:
            self.shut(fd, over)

    def _gone(self, fd: int) -> None:
        conn = self._by_fd.pop(fd, None)
        if conn is None:
            return
        if not conn.authenticated:
            self.unauth.remove(conn.addr)
        self._closed_since_trim += 1
        self._on_closed(fd)

    async def _sweep(self) -> None:
        """Close connections past the authentication deadline; give freed memory back."""
        while True:
            await asyncio.sleep(timing.AUTH_SWEEP_INTERVAL_S)  # the deadline sweep period
            horizon = time.monotonic() - self.options.auth_deadline_s
            for conn in [
                c for c in self._by_fd.values() if not c.authenticated and c.since < horizon
            ]:
                if not self.shut(conn.fd, "auth_deadline"):
                    self._gone(conn.fd)  # not that connection any more: forget it
            if self._closed_since_trim >= TRIM_AFTER_CLOSED:
                self._closed_since_trim = 0
                if _malloc_trim is not None:  # libzmq's per-connection buffers, back to the OS
                    _malloc_trim(0)
