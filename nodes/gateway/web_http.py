"""The plain HTTP side of the gateway's web port: the web client's files, /gateways, Origin.

Role: answer every HTTP request of the web port that is not a WebSocket upgrade of /ws —
`GET /` and the static files of the web client (the directory `nodes/gateway/web/`), and
`GET /gateways` (JSON: the WebSocket URLs of the cluster's live gateways, this one first) — and
decide whether a WebSocket's `Origin` may connect. websockets parses the request (GET only, no
body, lines up to 8 KiB, at most 128 headers); this module never builds a file path from the
request: a path is served only if every segment is a plain name (letters, digits, `_.-`, not
starting with a dot), it resolves inside the web directory and is a regular file of a known type
(up to MAX_FILE_BYTES). Every response carries a strict Content-Security-Policy. No sockets.
"""

from __future__ import annotations

import email.utils
import http
import json
import re
from collections.abc import Callable
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

WEB_DIR = Path(__file__).resolve().parent / "web"
MAX_FILE_BYTES = 4 << 20
CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}
MAX_REMEMBERED_ORIGINS = 256
"""Web origins of gateways seen live, kept after they die (the oldest are forgotten first)."""
_PATH_RE = re.compile(
    r"^/(?:[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}/){0,4}[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$"
)


def web_origin(url: str) -> str:
    """The page origin of a WebSocket URL: ws://h:p/ws -> http://h:p, wss -> https."""
    scheme, _, rest = url.partition("://")
    return ("https" if scheme == "wss" else "http") + "://" + rest.split("/", 1)[0]


def response(status: int, body: bytes, content_type: str) -> Response:
    """A complete HTTP response with the security headers of every answer."""
    code = http.HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Content-Security-Policy", CSP),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Cache-Control", "no-cache"),
            ("Connection", "close"),
        ]
    )
    return Response(code.value, code.phrase, headers, body)


def text(status: int, message: str) -> Response:
    """A short plain-text answer (an error)."""
    return response(status, message.encode() + b"\n", "text/plain; charset=utf-8")


class WebHttp:
    """The HTTP answers of one gateway's web port."""

    def __init__(
        self,
        gateways: Callable[[], list[str]],
        origins: tuple[str, ...],
        root: Path = WEB_DIR,
    ) -> None:
        self._gateways = gateways
        self._origins = frozenset(origins)
        self._root = root.resolve()
        self._seen: dict[str, None] = {}  # web origins of gateways seen live, oldest first

    def remember_gateways(self) -> None:
        """Note the web origins of the live gateways, kept after they die: a page served by a
        gateway that was killed fails over here with its Origin (called periodically)."""
        for url in self._gateways():
            self._seen.pop(origin := web_origin(url), None)
            self._seen[origin] = None
        while len(self._seen) > MAX_REMEMBERED_ORIGINS:
            del self._seen[next(iter(self._seen))]

    def origin_allowed(self, request: Request, scheme: str) -> bool:
        """May a page of this Origin open a WebSocket here? No Origin (not a browser): yes.
        With SOIM_WEB_ORIGINS: only those. Else the origin this page was served from (this
        port under the Host the browser used) and every gateway's web origin seen live (also
        after it died: its pages fail over here)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        if self._origins:
            return origin in self._origins
        host = request.headers.get("Host", "")
        if host and origin == f"{scheme}://{host}":
            return True
        self.remember_gateways()
        return origin in self._seen

    def answer(self, request: Request) -> Response:
        """The answer to a plain GET of `request.path` (not the WebSocket of /ws)."""
        path = request.path.split("?", 1)[0]
        if path == "/gateways":
            body = json.dumps({"gateways": self._gateways()}).encode()
            return response(200, body, "application/json")
        if path == "/":
            path = "/index.html"
        if not _PATH_RE.match(path):
            return text(404, "not found")
        kind = TYPES.get(Path(path).suffix.lower())
        file = (self._root / path[1:]).resolve()
        if kind is None or not file.is_relative_to(self._root):
            return text(404, "not found")
        try:
            if not file.is_file() or file.stat().st_size > MAX_FILE_BYTES:
                return text(404, "not found")
            body = file.read_bytes()[: MAX_FILE_BYTES + 1]
        except OSError:
            return text(404, "not found")
        if len(body) > MAX_FILE_BYTES:
            return text(404, "not found")
        return response(200, body, kind)
