"""Prometheus metrics of a node: the fabric's counters and the HTTP endpoint that serves them.

Role: define the process-wide metric families (frames in/out, bad frames, RPC latency, peers
alive, soim_build_info) and start/stop the metrics HTTP server whose port goes in the zeroconf
TXT record. It serves /metrics, /healthz (200 "ok" while the process serves) and /readyz
(200 "ready", or 503 and the one-line reason the node's readiness callable gives); any other
path is 404.
Peer sockets: an HTTP listener on the node's host (a WSGI server thread that starts a thread
per request, as prometheus-client's own server does; /readyz blocks only its request's thread).

Hot paths count per batch pass, not per frame. The RPC latency is observed once per call, so it
is a `LatencyHistogram`: the same exposition as a prometheus-client Histogram at a fraction of
the cost of its `observe`, which only appends to a list; the list is sorted into the buckets
(under one lock, for many observations at once) every `FOLD_EVERY` observations and whenever
the histogram is read.
"""

from __future__ import annotations

import bisect
import platform
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, Counter, Gauge, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from fabric import __version__


class LatencyHistogram(Collector):
    """A histogram family with one label, exported like prometheus-client's Histogram."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = tuple(sorted(buckets))
        self._children: dict[str, LatencyChild] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def labels(self, value: str) -> LatencyChild:
        """The histogram for one label value (created on first use)."""
        with self._lock:
            child = self._children.get(value)
            if child is None:
                child = self._children[value] = LatencyChild(self.bounds)
            return child

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        with self._lock:
            children = list(self._children.items())
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for value, child in children:
            counts, total = child.snapshot()
            cumulative, running = [], 0
            for le, n in zip(les, counts, strict=True):
                running += n
                cumulative.append((le, running))
            family.add_metric([value], cumulative, total)
        yield family


FOLD_EVERY = 256
"""Observations a `LatencyChild` holds before sorting them into its buckets."""


class LatencyChild:
    """One label value's buckets: counts per bucket (the last is +Inf) and the sum.

    `observe` takes no lock: appending to a list is atomic under the GIL. A fold, under the
    lock, takes the values pending when it starts; any appended meanwhile wait for the next.
    """

    __slots__ = ("_bounds", "_counts", "_lock", "_pending", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._pending: list[float] = []
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """Count one observation (a bucket's bound is inclusive, as in Prometheus)."""
        pending = self._pending
        pending.append(seconds)
        if len(pending) >= FOLD_EVERY:
            self._fold()

    def snapshot(self) -> tuple[list[int], float]:
        """Per-bucket counts and the sum, read together, every observation so far included."""
        with self._lock:
            self._fold_locked()
            return list(self._counts), self._sum

    def _fold(self) -> None:
        with self._lock:
            self._fold_locked()

    def _fold_locked(self) -> None:
        pending = self._pending
        n = len(pending)
        values = pending[:n]
        del pending[:n]
        bounds, counts, total = self._bounds, self._counts, self._sum
        for seconds in values:
            counts[bisect.bisect_left(bounds, seconds)] += 1
            total += seconds
        self._sum = total


FRAMES_IN = Counter("soim_frames_in_total", "Frames received", ["socket"])
FRAMES_OUT = Counter("soim_frames_out_total", "Frames sent", ["socket"])
BAD_FRAMES = Counter("soim_bad_frames_total", "Frames refused, by reason", ["socket", "reason"])
RPC_SECONDS = LatencyHistogram(
    "soim_rpc_seconds",
    "RPC latency seen by the caller",
    "method",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RPC_ERRORS = Counter(
    "soim_rpc_errors_total", "RPC calls that ended in an error", ["method", "code"]
)
RPC_SERVED = Counter("soim_rpc_served_total", "RPC requests served", ["method", "code"])
PEERS_ALIVE = Gauge("soim_peers_alive", "Live peers in the membership view", ["role"])
NODE_LOAD = Gauge("soim_node_load", "This node's load figure, as sent in its heartbeat")
BUILD_INFO = Gauge(
    "soim_build_info",
    "Always 1: the so-im version and Python this process runs",
    ["version", "python"],
)
BUILD_INFO.labels(__version__, platform.python_version()).set(1)


Readiness = Callable[[], str | None]
"""Called in a request's thread: None when the node is ready, else a one-line reason."""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: Prometheus and probes ask every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingWSGIServer):
    """prometheus-client's threading WSGI server, bound without http.server's reverse lookup of
    its own address (socket.getfqdn, which also loads the idna codec and unicodedata) for a
    SERVER_NAME that nothing here reads: the host it was given is the name."""

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _Server6(_Server):
    """The same server on an IPv6 address (SOIM_HOST such as ::1)."""

    address_family = socket.AF_INET6


class MetricsServer:
    """The HTTP endpoint of one node (/metrics, /healthz, /readyz); port 0 picks a free port."""

    def __init__(self, host: str, port: int, readiness: Readiness = lambda: None) -> None:
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._metrics = make_wsgi_app(REGISTRY)
        self.readiness = readiness
        self.host = host
        self.port = port

    def start(self) -> int:
        """Start serving in a daemon thread; return the bound port."""
        kind = _Server6 if ":" in self.host else _Server
        self._server = make_server(
            self.host, self.port, self._app, kind, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()
        self.port = int(self._server.server_port)
        return self.port

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok")
        if path == "/readyz":
            try:
                reason = self.readiness()
            except Exception as err:  # any failure of the check is a reason
                reason = f"readiness check failed: {type(err).__name__}: {err}"
            if reason is None:
                return _text(start_response, "200 OK", "ready")
            return _text(start_response, "503 Service Unavailable", reason)
        return _text(start_response, "404 Not Found", "not found: /metrics, /healthz, /readyz")

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None


def _text(start_response: StartResponse, status: str, line: str) -> list[bytes]:
    body = f"{line}\n".encode()
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    )
    return [body]
