"""`soimctl bench hops`: what one lone 1:1 message costs across the nodes, counted, not timed.

Role: one benchmark command. It starts a throwaway cluster of the `make run` shape
(tools.local_cluster: a directory, 2 routers, a storage node, 2 gateways, SQLite unless
SOIM_DB names MariaDB), registers two friends — the sender on one gateway, the recipient on the
other — and sends --messages messages one at a time, each once the recipient has the one before
(so every hop handles it alone). Around that it reads every node's /metrics counters and every
thread's voluntary context switches (/proc/PID/task/TID/status; those of the ZeroMQ I/O thread
apart), and as long an idle window before it; it prints, per role (nodes of a role summed),
what changed per message less the idle rate: RPCs served and made, frames, pushes, flushes,
cursor batches, context switches. Durations are not reported: they depend on the machine.
Whether the two users are owned by one router or two is the ring's choice: with one, each push
is one Router.Deliver call instead of two.
Peer sockets: those of its `ClusterView` (zeroconf, events SUB), the two clients' DEALERs to
the gateways, an HTTP GET of each node's /metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from fabric import keys
from fabric.config import Config
from tools.bench_clients import BenchError
from tools.bench_target import PASSWORD, SETTLE_S, SPAWN
from tools.cluster_view import ClusterView
from tools.local_cluster import LocalCluster, LocalNode, throwaway
from tui.session import ClientSession, EventKind

IDLE_S = 5.0
"""The idle window whose rate of each figure is subtracted (heartbeats, probes)."""
PUSH_WAIT_S = 10.0
ZMQ_IO = "ZMQbg/IO"
"""The name libzmq gives its I/O threads."""
SHOWN = 0.05
"""Figures below this per message are left out (what is left of the idle rate's noise)."""


Figures = defaultdict[str, float]
"""A figure's name -> its value, 0 when absent."""


def _counters(port: int, out: Figures) -> None:
    """Add every counter of a node's /metrics (histograms by their _count), by name{labels}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text = page.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name.startswith(("process", "python")):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_total", "_count")):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] += sample.value


def _switches(pid: int, out: Figures) -> None:
    """Add the voluntary context switches of a process: all its threads, and its ZeroMQ I/O
    threads."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                n = int(line.split()[1])
                out["context_switches"] += n
                if comm.startswith(ZMQ_IO):
                    out["context_switches_zmq_io"] += n


def _snapshot(view: ClusterView, nodes: list[LocalNode]) -> dict[str, Figures]:
    """Role -> every figure summed over the nodes of that role."""
    out: dict[str, Figures] = {}
    for node in nodes:
        peer = view.membership.get(node.node_id)
        if peer is None:
            raise BenchError(f"{node.node_id} is not alive")
        figures = out.setdefault(node.role, defaultdict(float))
        _counters(peer.info.metrics_port, figures)
        _switches(node.pid, figures)
    return out


def per_message(
    before_idle: dict[str, Figures],
    after_idle: dict[str, Figures],
    after_sends: dict[str, Figures],
    idle_s: float,
    sends_s: float,
    messages: int,
) -> dict[str, dict[str, float]]:
    """What each role's figures grew by per message while sending, less the idle rate."""
    out: dict[str, dict[str, float]] = {}
    for role, end in after_sends.items():
        start, idle_start = after_idle[role], before_idle[role]
        figures = {}
        for name in sorted(set(end) | set(start)):
            idle = (start[name] - idle_start[name]) * sends_s / idle_s
            value = (end[name] - start[name] - idle) / messages
            if abs(value) >= SHOWN:
                figures[name] = round(value, 2)
        out[role] = figures
    return out


async def _client(cfg: Config, view: ClusterView, gateway: int, account: str) -> ClientSession:
    peers = sorted(view.membership.alive("gateway"), key=lambda p: p.node_id)
    client = ClientSession(
        peers[gateway].info.endpoints["client"], keys.load_client_plane_public(cfg.keys_dir)
    )
    await client.connect()
    await client.register(account, PASSWORD)
    return client


async def _next_message(client: ClientSession) -> None:
    async with asyncio.timeout(PUSH_WAIT_S):
        while (await client.events.get()).kind is not EventKind.MESSAGE:
            pass


async def _measure(cluster: LocalCluster, messages: int) -> dict[str, Any]:
    cfg = Config.from_env(cluster.env, role="soimctl")
    async with ClusterView(cfg) as view:
        nodes = [n for role, count in SPAWN.items() for n in cluster.start(role, count)]
        try:
            await cluster.wait_alive(view, nodes, SETTLE_S)
        except RuntimeError as err:
            raise BenchError(f"the throwaway cluster did not start: {err}") from None
        sender = await _client(cfg, view, 0, "hops-sender")
        recipient = await _client(cfg, view, 1, "hops-recipient")
        assert sender.user is not None and recipient.user is not None
        to_user = recipient.user.user_id
        try:
            await sender.add_friend(to_user)
            await recipient.add_friend(sender.user.user_id)

            async def one(i: int) -> None:
                await sender.send(f"message {i}", to_user=to_user)
                await _next_message(recipient)

            for i in range(3):  # the first ones load caches and open connections
                await one(i)
            before_idle = _snapshot(view, nodes)
            started = time.monotonic()
            await asyncio.sleep(IDLE_S)  # the idle window being measured
            after_idle = _snapshot(view, nodes)
            idle_s, started = time.monotonic() - started, time.monotonic()
            for i in range(messages):
                await one(i)
            after_sends = _snapshot(view, nodes)
            sends_s = time.monotonic() - started
        except TimeoutError:
            raise BenchError(f"a message did not arrive in {PUSH_WAIT_S:g} s") from None
        finally:
            await sender.close()
            await recipient.close()
    return {
        "messages": messages,
        "nodes": dict(Counter(n.role for n in nodes)),
        "per_message": per_message(before_idle, after_idle, after_sends, idle_s, sends_s, messages),
        "note": "per lone 1:1 message, nodes of a role summed, the idle rate subtracted: "
        "counters of /metrics (RPCs served by method and code, calls made, frames by socket, "
        "pushes, flushes, cursor batches) and voluntary context switches of every thread "
        "(context_switches_zmq_io: those of the ZeroMQ I/O threads)",
    }


def run(args: dict[str, Any]) -> int:
    """Entry point from soimctl: `bench hops [--json] [--messages N]`."""
    try:
        messages = int(args.get("--messages") or 100)
    except ValueError:
        messages = 0
    if messages < 1:
        print(
            f"soimctl: --messages must be a positive integer, got {args['--messages']!r}",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up as on Ctrl-C
    try:
        with throwaway(dict(os.environ)) as cluster:
            result = asyncio.run(_measure(cluster, messages))
    except BenchError as err:
        print(f"soimctl: bench hops: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=None if args.get("--json") else 2))
    return 0
