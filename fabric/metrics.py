"""Prometheus metrics of a node: the fabric's counters and the HTTP endpoint that serves them.

Role: define the process-wide metric families (frames in/out, bad frames, RPC latency, peers
alive) and start/stop the metrics HTTP server whose port goes in the zeroconf TXT record.
Peer sockets: an HTTP listener on the node's host (prometheus-client's WSGI server thread).
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

FRAMES_IN = Counter("soim_frames_in_total", "Frames received", ["socket"])
FRAMES_OUT = Counter("soim_frames_out_total", "Frames sent", ["socket"])
BAD_FRAMES = Counter("soim_bad_frames_total", "Frames refused, by reason", ["socket", "reason"])
RPC_SECONDS = Histogram(
    "soim_rpc_seconds",
    "RPC latency seen by the caller",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RPC_ERRORS = Counter(
    "soim_rpc_errors_total", "RPC calls that ended in an error", ["method", "code"]
)
RPC_SERVED = Counter("soim_rpc_served_total", "RPC requests served", ["method", "code"])
PEERS_ALIVE = Gauge("soim_peers_alive", "Live peers in the membership view", ["role"])
NODE_LOAD = Gauge("soim_node_load", "This node's load figure, as sent in its heartbeat")


class MetricsServer:
    """The /metrics HTTP endpoint of one node; port 0 picks a free port."""

    def __init__(self, host: str, port: int) -> None:
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = port

    def start(self) -> int:
        """Start serving; return the bound port."""
        self._server, self._thread = start_http_server(self.port, addr=self.host)
        self.port = int(self._server.server_port)
        return self.port

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
