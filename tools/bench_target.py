"""The cluster a `soimctl bench chat` run measures, as the bench sees it.

Role: `Target` (the live gateways, the pids of its nodes, a `CpuMeter` over them, the
storage nodes' commit-time histogram), the process figures read from /proc (CPU seconds, RSS
and peak RSS, who listens on a port), and `step`, one request per client connection through a
`ClientPool`.
Shared by the login and chat modes.
Peer sockets: those of its `ClusterView` (zeroconf, events SUB) and of the client workers; an
HTTP GET of each storage node's /metrics.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabric.config import Config
from schema.contracts.client import CLIENT
from tools.bench_clients import (
    BenchError,
    ClientPool,
    replies_ok,
)
from tools.cluster_view import ClusterView
from tools.cmd_stats import metric_families

PASSWORD = "bench-password-1"
SETTLE_S = 30.0
"""How long to wait for the spawned nodes to be alive, or a gateway to report its sessions."""
SPAWN = {"gateway": 2, "router": 2, "directory": 1, "storage": 1}
CLIENTS = "clients"
"""The CpuMeter group of the client workers."""
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """VmRSS (or another size of /proc/PID/status, such as the peak VmHWM) of a process in MB
    (MiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no {field} for pid {pid}")


def bucket_quantile_ms(
    before: dict[float, float], after: dict[float, float], q: float
) -> float | None:
    """The upper bound (ms) of the histogram bucket holding quantile `q` of what was observed
    between two `Target.commit_buckets()` readings (None: nothing observed)."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not counts or counts[-1][1] <= 0:
        return None
    for le, n in counts:
        if n >= q * counts[-1][1]:
            return round(le * 1000, 2) if le != float("inf") else None
    return None


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores each group of processes kept busy between `start()` and `stop()`, and the CPU
    seconds of each group (`used_s`, set by `stop()`)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.used_s: dict[str, float] = {}
        self._start: dict[int, float] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._start = {pid: cpu_s(pid) for pids in self.groups.values() for pid in pids}
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._t0
        self.used_s = {
            group: sum(cpu_s(pid) - self._start[pid] for pid in pids)
            for group, pids in self.groups.items()
            if pids
        }
        return {group: round(used / wall, 2) for group, used in self.used_s.items()}

    def nodes_s(self) -> float:
        """CPU seconds of every node process at the last `stop()` (not the clients')."""
        return sum(used for group, used in self.used_s.items() if group != CLIENTS)


def listening_pid(port: int) -> int:
    """The pid of the local process listening on TCP `port` (found through /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                inodes.add(f"socket:[{cols[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    raise BenchError(f"no local process of this user listens on port {port}")


async def wait_sessions(view: ClusterView, gateway_id: str, at_least: int) -> None:
    """Wait until the gateway's heartbeat reports `at_least` sessions."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        peer = view.membership.get(gateway_id)
        if peer is not None and peer.sessions >= at_least:
            return
        await asyncio.sleep(0.1)  # polling heartbeats until the deadline
    raise BenchError(f"gateway {gateway_id} did not report {at_least} sessions")


@dataclass
class Target:
    """The cluster under test, as this process sees it."""

    view: ClusterView
    cfg: Config
    pids: dict[str, tuple[str, int]]  # node id -> (role, pid), for the spawned nodes

    def gateways(self, plane: str = "client") -> list[tuple[str, str, bytes]]:
        """(node id, endpoint, server key) of every live gateway, by node id: its client
        ROUTER's endpoint, or with `plane` "web" the URL of its WebSocket plane (gateways
        without one left out)."""
        return [
            (p.node_id, p.info.endpoints[plane], p.info.client_key.encode())
            for p in self.view.membership.alive("gateway")
            if plane in p.info.endpoints
        ]

    def pid(self, node_id: str, endpoint: str) -> int:
        """The pid of a gateway of this machine."""
        if node_id in self.pids:
            return self.pids[node_id][1]
        return listening_pid(int(endpoint.rsplit(":", 1)[1]))

    def commit_buckets(self) -> dict[float, float]:
        """Flush commits so far of every live storage node, cumulative by bucket upper bound
        in seconds (the soim_storage_commit_seconds histogram)."""
        out: dict[float, float] = {}
        for peer in self.view.membership.alive("storage"):
            for family in metric_families(peer):
                if family.name != "soim_storage_commit_seconds":
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        le = float(sample.labels["le"])
                        out[le] = out.get(le, 0.0) + sample.value
        return out

    def node_pids(self) -> dict[str, tuple[str, int]]:
        """Node id -> (role, pid): the spawned nodes, or else every live node of this machine
        (found from its metrics port; nodes elsewhere are left out)."""
        if self.pids:
            return self.pids
        found = {}
        for peer in self.view.membership.alive():
            host = peer.info.endpoints.get("rpc", "").rsplit(":", 1)[0].removeprefix("tcp://")
            if host in LOCAL_HOSTS and peer.info.metrics_port:
                try:
                    found[peer.node_id] = (peer.role, listening_pid(peer.info.metrics_port))
                except BenchError:
                    continue
        return found

    def cpu_meter(self, *pools: ClientPool) -> CpuMeter:
        """A CpuMeter over the nodes (by role) and the client workers of `pools`."""
        groups: dict[str, list[int]] = {role: [] for role in SPAWN}
        for role, pid in self.node_pids().values():
            groups.setdefault(role, []).append(pid)
        groups[CLIENTS] = [pid for pool in pools for pid in pool.pids]
        return CpuMeter(groups)

    def node_memory_mb(self) -> dict[str, float]:
        """RSS now and peak RSS (VmHWM) summed over the node processes, in MB."""
        pids = [pid for _, pid in self.node_pids().values()]
        return {
            "rss": round(sum(rss_mb(pid) for pid in pids), 1),
            "peak": round(sum(rss_mb(pid, "VmHWM") for pid in pids), 1),
            "nodes": len(pids),
        }


async def step(
    pool: ClientPool, name: str, payloads: list[bytes | None], window: int = 0
) -> tuple[float, list[Any]]:
    """payloads[i] (None: nothing) on connection i, at most `window` in flight per worker (0:
    all at once); (seconds from the first send to the last reply, the replies)."""
    took, results = await asyncio.to_thread(pool.call, name, payloads, window or len(payloads))
    return took, replies_ok(name, results, CLIENT[name].reply.FromString)
