"""The gateway's WebSocket client plane: the client protocol for browsers and any language.

Role: serve SOIM_WEB_PORT (HTTP, or HTTPS with SOIM_WEB_CERT/SOIM_WEB_KEY) with the websockets
library on the gateway's event loop: `GET /ws` upgrades to a WebSocket speaking the client
protocol, one envelope frame per binary message (subprotocol `soim.proto`) or its JSON mapping
per text message (`soim.json`, the default; `nodes.gateway.web_frames`); every other request
is plain HTTP (`nodes.gateway.web_http`: the web client's files, /gateways).

A WebSocket connection feeds the same session layer as the ZeroMQ client ROUTER. It gets an
identity of its own that libzmq can never give a ROUTER peer (libzmq's are 5 bytes, and a
peer's chosen routing id may not start with a zero byte: these are b"\\x00ws" and 8 bytes), a
peer key of its own (b"ws:<n>": the per-connection rate limit and the session check of the
gateway's gate) and a negative connection number (-2, -3, ...) where the ZeroMQ plane has the
TCP connection's file descriptor (`Call.peer_fd`, `Session.fd`): so the session table tells
the gateway which plane a session is on, and a session ends when its WebSocket closes exactly
as when its TCP connection does (`on_closed(number)`). Its requests go to the gateway's
client `RpcServer` (`dispatch`), whose replies and the gateway's pushes for these identities
come back through `divert` and are written straight to the connection's transport.

Limits, as on the ZeroMQ plane: connections without a session per address and in total
(SOIM_MAX_UNAUTH_PER_ADDR, SOIM_MAX_UNAUTH_TOTAL: the next TCP connection is closed at once)
and their deadline (SOIM_AUTH_DEADLINE_S, also the opening handshake's); a message at most
SOIM_MAX_FRAME_BYTES (else the connection is closed with 1009); at most 16 received messages
queued per connection (then websockets stops reading its socket); the bytes written and not yet
taken by the client (the transport's write buffer) at most SOIM_CLIENT_QUEUE_BYTES: past it the
session ends (`on_over`, a slow reader) and the connection is reset. The Origin of a browser's
WebSocket must be allowed (else HTTP 403). Keepalive: a ping every 20 s, closed after 20 s
without its pong.
Peer sockets: the listening TCP socket of SOIM_WEB_PORT and its connections (no ZeroMQ).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidState
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from fabric import envelope, metrics, timing
from fabric.rpc_server import RpcServer
from nodes.gateway.options import GatewayOptions
from nodes.gateway.unauth import UnauthCount
from nodes.gateway.web_frames import FrameError, JsonCodec, error_json
from nodes.gateway.web_http import WebHttp, text
from schema import common_pb2 as pb

log = logging.getLogger(__name__)
JSON = Subprotocol("soim.json")
PROTO = Subprotocol("soim.proto")
WS_PATH = "/ws"
IDENTITY_PREFIX = b"\x00ws"
CLOSE_BUDGET_S = 1.0
"""How long closing the plane waits for its connections' closing handshakes."""


class _Quiet(logging.Filter):
    """A failed opening handshake is a hostile or broken peer, not the gateway's error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "opening handshake failed"


class WebConn(ServerConnection):
    """One TCP connection of the web port (a WebSocket once upgraded)."""

    plane: WebPlane  # set on the subclass each plane makes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.number = 0
        self.identity = b""
        self.codec: JsonCodec | None = None
        self.meta: tuple[bytes, str, int] = (b"", "", -1)  # as fabric's batch reader's Meta
        self.addr = ""
        self.since = time.monotonic()
        self.authenticated = False
        self.over = False  # past the byte cap: written to no more
        self.plane.accepted(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.plane.lost(self)

    def write(self, frame: bytes, cache: dict[int, str] | None = None) -> None:
        """Send one envelope frame the gateway addressed to this connection, now (no await):
        as is on `soim.proto`, as JSON on `soim.json`."""
        if self.over:
            return
        try:
            if self.codec is None:
                self.protocol.send_binary(frame)
            else:
                out = cache.get(id(frame)) if cache is not None else None
                if out is None:
                    out = self.codec.outgoing(frame)
                    if out is None:
                        return
                    if cache is not None:
                        cache[id(frame)] = out
                self.protocol.send_text(out.encode())
            self.send_data()
        except (InvalidState, OSError):
            return  # closing: what it would say is lost with the connection
        self.check_backlog()

    def write_text(self, message: str) -> None:
        """Send a JSON frame made here (a refusal)."""
        if self.over:
            return
        try:
            self.protocol.send_text(message.encode())
            self.send_data()
        except (InvalidState, OSError):
            return
        self.check_backlog()

    def check_backlog(self) -> None:
        """Past SOIM_CLIENT_QUEUE_BYTES unread in the write buffer: a slow reader."""
        buffered = self.transport.get_write_buffer_size()
        if buffered > self.plane.options.client_queue_bytes and not self.over:
            self.over = True
            self.plane.too_far(self, buffered)


class WebPlane:
    """The WebSocket plane of one gateway; `await start()`, then `await close()`."""

    def __init__(
        self,
        options: GatewayOptions,
        unauth: UnauthCount,
        host: str,
        advertise_host: str,
        max_frame_bytes: int,
        rpc: RpcServer,
        on_closed: Callable[[int], None],
        on_over: Callable[[bytes, int], None],
        has_session: Callable[[bytes], bool],
        gateways: Callable[[], list[str]],
    ) -> None:
        self.options = options
        self.unauth = unauth
        self.host = host
        self.advertise_host = advertise_host
        self.max_frame_bytes = max_frame_bytes
        self.url = ""
        """This plane's WebSocket URL, ws(s)://host:port/ws, once started."""
        self._rpc = rpc
        self._on_closed = on_closed
        self._on_over = on_over
        self._has_session = has_session
        self._others = gateways
        self._http = WebHttp(self.gateways, options.web_origins)
        self._scheme = "https" if options.web_cert else "http"
        self._conn_type = type("PlaneConn", (WebConn,), {"plane": self})
        self._by_number: dict[int, WebConn] = {}
        self._by_identity: dict[bytes, WebConn] = {}
        self._next = 2
        self._server: Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._logger = logging.getLogger(f"{__name__}.websockets")
        self._logger.addFilter(_Quiet())

    def __len__(self) -> int:
        return len(self._by_number)

    async def start(self) -> str:
        """Listen; return the advertised WebSocket URL."""
        tls: ssl.SSLContext | None = None
        if self.options.web_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.options.web_cert, self.options.web_key)
        self._server = await serve(
            self._serve,
            self.host,
            self.options.web_port or 0,
            subprotocols=[JSON, PROTO],
            select_subprotocol=_select,
            compression=None,
            process_request=self._process_request,
            server_header=None,
            open_timeout=self.options.auth_deadline_s,
            close_timeout=CLOSE_BUDGET_S,
            max_size=self.max_frame_bytes,
            max_queue=16,
            logger=self._logger,
            create_connection=self._conn_type,
            ssl=tls,
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        scheme = "wss" if tls is not None else "ws"
        self.url = f"{scheme}://{self.advertise_host}:{port}{WS_PATH}"
        self._sweeper = asyncio.ensure_future(self._sweep())
        return self.url

    async def close(self) -> None:
        """Stop listening; close every connection (a short closing handshake, then reset)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._server is None:
            return
        self._server.close()
        try:
            async with asyncio.timeout(CLOSE_BUDGET_S):
                await self._server.wait_closed()
        except TimeoutError:
            for conn in list(self._by_number.values()):
                conn.transport.abort()

    def gateways(self) -> list[str]:
        """The WebSocket URLs of the live gateways, this one first."""
        return [self.url, *(u for u in self._others() if u != self.url)]

    # ---- the gateway's side
    def divert(self, messages: list[list[bytes]]) -> list[list[bytes]]:
        """Write the messages ([identity, frame]) addressed to this plane's connections;
        return the others (the ZeroMQ plane's). With no WebSocket open: `messages` itself."""
        conns = self._by_identity
        if not conns:
            return messages
        rest: list[list[bytes]] = []
        cache: dict[int, str] = {}  # one JSON text per frame sent to many connections
        for message in messages:
            conn = conns.get(message[0])
            if conn is None:
                rest.append(message)
            else:
                conn.write(message[1], cache)
        return rest

    def authenticated(self, number: int, yes: bool) -> None:
        """A session opened (`yes`) or ended on the connection `number`."""
        conn = self._by_number.get(number)
        if conn is None:
            if yes:  # it closed while its Login was out: that session ends at once
                asyncio.get_running_loop().call_soon(self._on_closed, number)
            return
        if conn.authenticated == yes:
            return
        conn.authenticated = yes
        if yes:
            self.unauth.remove(conn.addr)
        else:
            conn.since = time.monotonic()
            self.unauth.add(conn.addr)

    def shut(self, number: int, reason: str, reset: bool = False) -> bool:
        """Close the connection `number`: a closing handshake (1008, `reason`), or with `reset`
        at once. False if it is gone."""
        conn = self._by_number.get(number)
        if conn is None or conn.transport.is_closing():
            return False
        metrics.BAD_FRAMES.labels("web", f"closed_{reason}").inc()
        if reset or not conn.identity:
            conn.transport.abort()
        else:
            task = asyncio.ensure_future(conn.close(1008, reason))
            task.add_done_callback(_ignore)
        return True

    def too_far(self, conn: WebConn, buffered: int) -> None:
        """`conn` left more than SOIM_CLIENT_QUEUE_BYTES unread: soon, end its session (a slow
        reader) and reset it."""
        asyncio.get_running_loop().call_soon(self._slow_reader, conn, buffered)

    def _slow_reader(self, conn: WebConn, buffered: int) -> None:
        if self._has_session(conn.identity):
            self._on_over(conn.identity, buffered)  # ends the session: it resets the connection
        self.shut(conn.number, "slow_reader", reset=True)

    # ---- connections
    def accepted(self, conn: WebConn) -> None:
        """A TCP connection of the web port (websockets' `connection_made`)."""
        conn.number = -self._next
        self._next += 1
        peer = conn.transport.get_extra_info("peername")
        conn.addr = peer[0] if peer else ""
        self._by_number[conn.number] = conn
        over = self.unauth.add(conn.addr)
        if over is not None:
            self.shut(conn.number, over, reset=True)

    def lost(self, conn: WebConn) -> None:
        """The connection closed (websockets' `connection_lost`): its session ends."""
        if self._by_number.pop(conn.number, None) is None:
            return
        self._by_identity.pop(conn.identity, None)
        if not conn.authenticated:
            self.unauth.remove(conn.addr)
        self._on_closed(conn.number)

    async def _sweep(self) -> None:
        """Close connections past the authentication deadline; catch readers that fell behind
        on what websockets writes by itself (the pongs of a client's pings); note the live
        gateways' web origins (see WebHttp.remember_gateways)."""
        while True:
            await asyncio.sleep(timing.AUTH_SWEEP_INTERVAL_S)  # the deadline sweep period
            self._http.remember_gateways()
            horizon = time.monotonic() - self.options.auth_deadline_s
            for conn in list(self._by_number.values()):
                if not conn.authenticated and conn.since < horizon:
                    self.shut(conn.number, "auth_deadline", reset=True)
                else:
                    conn.check_backlog()

    # ---- HTTP and the WebSocket
    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] != WS_PATH:
            return self._http.answer(request)
        if not self._http.origin_allowed(request, self._scheme):
            metrics.BAD_FRAMES.labels("web", "bad_origin").inc()
            return text(403, "this Origin may not open a WebSocket here")
        return None  # the WebSocket handshake goes on

    async def _serve(self, ws: ServerConnection) -> None:
        """One WebSocket, from its handshake to its close."""
        conn: WebConn = ws  # type: ignore[assignment]  # every connection is a WebConn
        if conn.number not in self._by_number:
            return  # closed meanwhile
        conn.identity = IDENTITY_PREFIX + (-conn.number).to_bytes(8, "big")
        conn.meta = (b"ws:%d" % -conn.number, conn.addr, conn.number)
        conn.codec = None if conn.subprotocol == PROTO else JsonCodec()
        self._by_identity[conn.identity] = conn
        try:
            async for message in conn:
                self._received(conn, message)
        except ConnectionClosed:
            pass
        finally:
            self._by_identity.pop(conn.identity, None)

    def _received(self, conn: WebConn, message: str | bytes) -> None:
        codec = conn.codec
        if codec is None:
            if isinstance(message, str):
                metrics.BAD_FRAMES.labels("web", "text_on_proto").inc()
                conn.write(
                    envelope.error_reply(0, pb.BAD_FRAME, "soim.proto takes binary messages")[0]
                )
                return
            frame = message
        else:
            try:
                frame = codec.request(message)
            except FrameError as err:
                metrics.BAD_FRAMES.labels("web", err.reason).inc()
                conn.write_text(error_json(err.rid, err.code, err.detail))
                return
        self._rpc.dispatch([[conn.identity, frame]], [conn.meta])


def _select(conn: ServerConnection, offered: Any) -> Subprotocol | None:
    """`soim.proto` if the client asks for it, else `soim.json` (also when it asks for none)."""
    if PROTO in offered and (JSON not in offered or offered.index(PROTO) < offered.index(JSON)):
        return PROTO
    return JSON if JSON in offered else None


def _ignore(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
