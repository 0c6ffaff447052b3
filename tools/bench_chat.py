"""soimctl bench chat: a real cluster under client load — chat messages (delivered per second,
send→deliver latency at a fixed rate, nothing lost or duplicated) or, with --logins, logins,
resumes, presence lookups and idle sessions; each with a ceiling measured in the same run.

Role: one benchmark command. With --spawn it starts a throwaway cluster (tools.local_cluster: 2
gateways, 2 routers, 1 directory, 1 storage) on the SOIM_DB / SOIM_REDIS_URL it is given and
removes it afterwards; without, it targets the running cluster of SOIM_CLUSTER (SOIM_KEYS_DIR).
The load comes from client worker processes (`ClientPool`): each holds many raw client
connections and drives them synchronously with one poller — requests of a setup step, or a chat
phase in which every connection sends and receives — so neither asyncio nor the client
library's timers are part of what is measured.
Peer sockets: in the workers, one DEALER per client connection (Curve with a fresh keypair) to a
gateway's client ROUTER; here, a `ClusterView` (zeroconf, events SUB), DEALERs to the routers'
RPC ROUTERs for Router.Lookup (cluster keys), a DEALER to bench_fabric's raw echo ROUTER (the
ceiling, in a server process of its own) and the database connections of a shard_store `Store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import zmq
from google.protobuf.message import Message

from fabric import envelope, keys, timing
from fabric.config import Config
from fabric.ring import Ring
from fabric.security import anonymous_client
from nodes.directory import account_rows, passwords
from nodes.directory.context import KDF_THREADS
from nodes.gateway.api import CLIENT
from nodes.router.api import ROUTER
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from shard_store.backend import StoreError
from shard_store.store import Store
from tools import bench_fabric
from tools.cluster_view import ClusterView
from tools.local_cluster import LocalCluster, throwaway

CLIENT_WORKERS = max(2, os.cpu_count() or 2)
"""Processes the client connections are spread over."""
PASSWORD = "bench-password-1"
REQUEST_TIMEOUT_S = 2 * timing.CLIENT_REQUEST_TIMEOUT_S
"""A client request not answered this long after it was sent is lost (TIMEOUT); a gateway
answers every request by its own deadline, CLIENT_REQUEST_TIMEOUT_S."""
RESUME_WINDOW = 64
"""Resumes each worker keeps in flight."""
OPEN_WINDOW = 256
"""First pings each worker keeps in flight on new connections (a Curve handshake each)."""
KDF_SLICES = 8
"""Slices the logins and the raw hashes are cut into, alternating (even)."""
KDF_INFLIGHT = KDF_THREADS
"""Password logins in flight: one per scrypt thread of the directory. A login queued behind
another waits out the gateway's 5 s upstream deadline on a loaded machine; one in flight per
thread leaves the KDF idle only for a round trip between hashes."""
LOOKUP_BATCH = 100
LOOKUP_INFLIGHT = 16
LOOKUP_S = 5.0
"""Default length of the lookup phase (--duration)."""
CHAT_S = 30.0
"""Default length of each chat phase (--duration)."""
SETTLE_S = 30.0
"""How long to wait for the spawned nodes to be alive, or a gateway to report its sessions."""
SPAWN = {"gateway": 2, "router": 2, "directory": 1, "storage": 1}
WINDOW = 8
"""Sends each chat client keeps in flight in the unthrottled phase."""
CLIENT_SEND_CAP_PER_S = timing.SESSION_RATE_PER_S * 0.9
"""Sends/s one client makes at most: under the gateway's per-session rate limit."""
GROUP_EVERY = 10
"""In the unthrottled phase every GROUP_EVERY-th send of a client goes to the group."""
GROUP_MAX = 1000
"""The first GROUP_MAX clients (the most a group admits) are in the group."""
BODY_CHARS = 100
FILLER = "so-im bench chat " * 6
QUIET_S = 2.0
"""A chat phase ends once its acks are in and no push came for this long ..."""
DRAIN_MAX_S = 20.0
"""... or this long after the last send."""
CEILING_S = 3.0
CEILING_INFLIGHT = 64
M = TypeVar("M", bound=Message)


class BenchError(Exception):
    """The benchmark could not run or its clients failed; the message says why."""


# ---- client worker processes

@dataclass
class Exchange:
    """What one worker's share of a setup step gave: when it ran and each request's outcome."""

    started: float
    finished: float
    results: list[tuple[int, bytes] | None]  # (error code, reply payload); None: not asked


@dataclass
class ChatPlan:
    """One chat phase of one worker: what each of its connections sends, and how fast."""

    targets: list[list[tuple[str, int]]]  # per connection: ("to_user" | "to_group", id), in turn
    start_at: float                        # time.monotonic() when every worker starts
    seconds: float
    rate: float                            # sends/s of this worker; 0: each keeps WINDOW out
    tag: str                               # makes client_msg_ids unique in the run


@dataclass
class ChatLog:
    """What one worker saw in a chat phase."""

    acks: list[tuple[int, int, int, int, int]]  # (connection, target turn, conv_id, seq, msg_id)
    received: list[list[int]]                   # per connection: msg_id of every pushed message
    latencies_ns: list[int]                     # send → push, of every push
    ack_latencies_ns: list[int]                 # send → ack, of every ack
    sent: int                                   # acked within the phase window
    delivered: int                              # pushed within the phase window
    delivered_group: int                        # of which group messages
    errors: dict[str, int]


def _client_worker(conn: Connection) -> None:
    """Body of a worker process: open sockets, run setup steps and chat phases as asked.

    Between commands it pings every connection each CLIENT_PING_INTERVAL_S, so idle sessions
    do not expire. It exits on "close", when the parent goes away, or on Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    ctx = zmq.Context()
    ctx.max_sockets = 65536
    socks: list[zmq.Socket] = []
    encoder = envelope.Encoder()
    rids = itertools.count(1)
    ping = client_pb2.PingRequest().SerializeToString()
    try:
        while True:
            if not conn.poll(timing.CLIENT_PING_INTERVAL_S):
                _keepalive(socks, encoder, rids)
                continue
            command, arg = conn.recv()
            if command == "open":  # `window` connections at a time, each answering a Ping
                targets, window = arg
                results: list[tuple[int, bytes] | None] = []
                for at in range(0, len(targets), window):
                    fresh = [_connect(ctx, *target) for target in targets[at:at + window]]
                    socks += fresh
                    results += _exchange(fresh, encoder, rids, "Ping", [ping] * len(fresh),
                                         window).results
                conn.send(Exchange(0.0, 0.0, results))
            elif command == "call":
                conn.send(_exchange(socks, encoder, rids, *arg))
            elif command == "chat":
                conn.send(_chat(socks, encoder, rids, arg))
            else:
                return
    except (EOFError, BrokenPipeError):
        return
    finally:
        for sock in socks:
            sock.close(0)
        ctx.term()


def _connect(ctx: zmq.Context, endpoint: str, server_key: bytes) -> zmq.Socket:
    """A client connection to a gateway: a DEALER with a fresh Curve keypair."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvhwm = sock.sndhwm = 0
    anonymous_client(sock, server_key)
    sock.connect(endpoint)
    return sock


def _keepalive(socks: Iterable[zmq.Socket], encoder: envelope.Encoder,
               rids: Iterator[int]) -> None:
    """A Ping on each connection, so its session does not expire idle; nobody waits for the
    replies (whoever reads the socket next skips them)."""
    deadline_ms = int((time.time() + REQUEST_TIMEOUT_S) * 1000)
    frame = client_pb2.PingRequest().SerializeToString()
    for sock in socks:
        with contextlib.suppress(zmq.Again):
            sock.send(encoder.request(CLIENT["Ping"].name, next(rids), deadline_ms, frame),
                      zmq.NOBLOCK)


def _exchange(socks: list[zmq.Socket], encoder: envelope.Encoder, rids: Iterator[int],
              name: str, payloads: Sequence[bytes | None], window: int) -> Exchange:
    """Send payloads[i] (unless None) as client.<name> on socks[i], at most `window` in flight;
    wait for every reply (TIMEOUT for one not here REQUEST_TIMEOUT_S after its request)."""
    method = CLIENT[name].name
    results: list[tuple[int, bytes] | None] = [None if p is None else (pb.TIMEOUT, b"")
                                               for p in payloads]
    todo = [i for i, p in enumerate(payloads) if p is not None]
    waiting: dict[zmq.Socket, tuple[int, int, float]] = {}  # (connection, request id, sent at)
    poller = zmq.Poller()
    started = last = time.monotonic()
    ping_at = started + timing.CLIENT_PING_INTERVAL_S
    while todo or waiting:
        now = time.monotonic()
        if now > ping_at:  # a long step: keep the sessions that wait for nothing alive
            _keepalive((sock for sock in socks if sock not in waiting), encoder, rids)
            ping_at = now + timing.CLIENT_PING_INTERVAL_S
        for sock, (_, _, sent_at) in list(waiting.items()):
            if now - sent_at > REQUEST_TIMEOUT_S:
                poller.unregister(sock)
                del waiting[sock]
        deadline_ms = int((time.time() + REQUEST_TIMEOUT_S) * 1000)
        while todo and len(waiting) < window:
            i, rid = todo.pop(), next(rids)
            socks[i].send(encoder.request(method, rid, deadline_ms, payloads[i] or b""))
            poller.register(socks[i], zmq.POLLIN)
            waiting[socks[i]] = (i, rid, now)
        for sock, _ in poller.poll(100):
            i, rid, _ = waiting[sock]
            try:
                env = envelope.decode([sock.recv()], timing.CLUSTER_MAX_FRAME_BYTES)
            except envelope.EnvelopeError:
                continue
            if env.header.kind != pb.REPLY or env.header.request_id != rid:
                continue  # a push, or the reply to an earlier keepalive ping
            results[i] = (env.header.error, env.payload)
            poller.unregister(sock)
            del waiting[sock]
            last = time.monotonic()
    return Exchange(started, last, results)


def _chat(socks: list[zmq.Socket], encoder: envelope.Encoder, rids: Iterator[int],
          plan: ChatPlan) -> ChatLog:
    """Run one chat phase on the first len(plan.targets) connections.

    Until start_at + seconds every connection sends — at the worker's share of a fixed rate, or
    as fast as it may (WINDOW in flight, at most CLIENT_SEND_CAP_PER_S) — and all the while every
    connection reads its acks and pushes. Then it waits for the acks still out and for the
    pushes to stop (QUIET_S without one), up to DRAIN_MAX_S.
    """
    n = len(plan.targets)
    method = CLIENT["Send"].name
    log = ChatLog([], [[] for _ in range(n)], [], [], 0, 0, 0, {})
    errors: Counter[str] = Counter()
    poller = zmq.Poller()
    index = {}
    for i, sock in enumerate(socks[:n]):
        poller.register(sock, zmq.POLLIN)
        index[sock] = i
    pending: dict[int, tuple[int, int, int]] = {}  # request id -> (connection, turn, sent ns)
    in_flight, turns, next_ok = [0] * n, [0] * n, [plan.start_at] * n
    stop_at = plan.start_at + plan.seconds
    deadline_ms = int((time.time() + plan.start_at - time.monotonic() + plan.seconds
                       + DRAIN_MAX_S) * 1000)
    due = 0

    def send(i: int) -> None:
        turn = turns[i]
        field, to = plan.targets[i][turn % len(plan.targets[i])]
        rid, now_ns = next(rids), time.monotonic_ns()
        request = client_pb2.SendRequest(client_msg_id=f"{plan.tag}{rid}", body=(
            f"{now_ns:016x}" + FILLER)[:BODY_CHARS], **{field: to})
        socks[i].send(encoder.request(method, rid, deadline_ms, request.SerializeToString()))
        pending[rid] = (i, turn, now_ns)
        in_flight[i] += 1
        turns[i] += 1

    time.sleep(max(plan.start_at - time.monotonic(), 0))  # the start shared by all workers
    last_push = time.monotonic()
    while True:
        now = time.monotonic()
        if now < stop_at:
            if plan.rate:
                while due < int((now - plan.start_at) * plan.rate) + 1:
                    send(due % n)
                    due += 1
                wait_ms = math.ceil((plan.start_at + due / plan.rate - now) * 1000)
            else:
                for i in range(n):
                    if in_flight[i] < WINDOW and next_ok[i] <= now:
                        send(i)
                        next_ok[i] = max(next_ok[i] + 1 / CLIENT_SEND_CAP_PER_S, now - 1)
                wait_ms = 1
        elif (not pending and now - last_push > QUIET_S) or now > stop_at + DRAIN_MAX_S:
            break
        else:
            wait_ms = 100
        for sock, _ in poller.poll(wait_ms):
            i = index[sock]
            while True:
                try:
                    frame = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                at = time.monotonic()
                try:
                    env = envelope.decode([frame], timing.CLUSTER_MAX_FRAME_BYTES)
                except envelope.EnvelopeError as err:
                    errors[f"bad frame {err.reason.value}"] += 1
                    continue
                if env.header.kind == pb.EVENT:
                    push = client_pb2.Push.FromString(env.payload)
                    if push.WhichOneof("item") != "message":
                        continue
                    msg = push.message
                    log.received[i].append(msg.msg_id)
                    log.latencies_ns.append(time.monotonic_ns() - int(msg.body[:16], 16))
                    if at < stop_at:
                        log.delivered += 1
                        log.delivered_group += msg.HasField("to_group")
                    last_push = at
                    continue
                sent = pending.pop(env.header.request_id, None)
                if sent is None:
                    continue  # a keepalive ping's reply
                in_flight[i] -= 1
                if env.header.error != pb.OK:
                    errors[pb.ErrorCode.Name(env.header.error)] += 1
                    continue
                ack = client_pb2.SendAck.FromString(env.payload)
                log.acks.append((i, sent[1], ack.conv_id, ack.seq, ack.msg_id))
                log.ack_latencies_ns.append(time.monotonic_ns() - sent[2])
                log.sent += at < stop_at
    errors["no ack"] += len(pending)
    log.errors = dict(+errors)
    return log


class ClientPool:
    """Client connections spread over worker processes: connection i lives in worker i % n."""

    def __init__(self, workers: int) -> None:
        ctx = mp.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[Any] = []
        for _ in range(workers):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_client_worker, args=(there,), daemon=True)
            proc.start()
            there.close()
            self._pipes.append(here)
            self._procs.append(proc)
        self.pids = [p.pid for p in self._procs]
        self.workers = workers

    def open(self, targets: Sequence[tuple[str, bytes]], window: int = 0) -> None:
        """Connect one client per (endpoint, server key), `window` at a time per worker (0:
        all at once); BenchError unless each answers a Ping."""
        n = len(self._pipes)
        window = window or len(targets)
        rounds = -(-len(targets) // (n * window)) + 1  # each at most REQUEST_TIMEOUT_S
        replies = self._ask([("open", (list(targets[w::n]), window)) for w in range(n)],
                            rounds * REQUEST_TIMEOUT_S)
        _ok("connect (Ping)", [r for reply in replies for r in reply.results],
            client_pb2.PingReply.FromString)

    def call(self, name: str, payloads: Sequence[bytes | None],
             window: int) -> tuple[float, list[tuple[int, bytes] | None]]:
        """payloads[i] (unless None) to connection i, at most `window` in flight per worker;
        (seconds from the first send to the last reply, result per connection)."""
        n = len(self._pipes)
        rounds = -(-len(payloads) // (n * window)) + 1  # each at most REQUEST_TIMEOUT_S
        replies = self._ask([("call", (name, list(payloads[w::n]), window)) for w in range(n)],
                            rounds * REQUEST_TIMEOUT_S)
        results: list[tuple[int, bytes] | None] = [None] * len(payloads)
        for w, reply in enumerate(replies):
            results[w::n] = reply.results
        elapsed = max(r.finished for r in replies) - min(r.started for r in replies)
        return max(elapsed, 1e-9), results

    def chat(self, targets: list[list[tuple[str, int]]], seconds: float, rate: float,
             tag: str) -> list[ChatLog]:
        """One chat phase over connections 0..len(targets)-1, starting on every worker at once;
        `rate` is the total sends/s (0: as fast as each may). One ChatLog per worker."""
        n = len(self._pipes)
        start_at = time.monotonic() + 0.5
        return self._ask([("chat", ChatPlan(targets[w::n], start_at, seconds,
                                            rate * len(targets[w::n]) / len(targets),
                                            f"{tag}{w}-")) for w in range(n)],
                         seconds + DRAIN_MAX_S)

    def _ask(self, commands: list[tuple[str, Any]], seconds: float) -> list[Any]:
        for pipe, command in zip(self._pipes, commands, strict=True):
            pipe.send(command)
        deadline = time.monotonic() + seconds + 30
        replies = []
        for pipe in self._pipes:
            if not pipe.poll(max(deadline - time.monotonic(), 0)):
                raise BenchError("a client worker did not answer in time")
            replies.append(pipe.recv())
        return replies

    def close(self) -> None:
        """Stop the workers (their sockets close with them)."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):  # BrokenPipeError: that worker is gone
                pipe.send(("close", None))
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _ok(what: str, results: Sequence[tuple[int, bytes] | None],
        parse: Callable[[bytes], M]) -> list[M]:
    """Parsed replies of the requests asked (not the Nones), in connection order; BenchError
    naming the error codes if any of them failed."""
    bad = Counter(pb.ErrorCode.Name(r[0]) for r in results if r is not None and r[0] != pb.OK)
    if bad:
        raise BenchError(f"{what}: {sum(bad.values())} of {len(results)} failed: {dict(bad)}")
    return [parse(r[1]) for r in results if r is not None]


# ---- measurements

def _kdf_slice(pool: ProcessPoolExecutor, count: int, n: int, r: int, p: int) -> float:
    """Seconds `count` raw hashlib.scrypt hashes at these parameters take on `pool`."""
    salts = [os.urandom(passwords.SALT_BYTES) for _ in range(count)]
    started = time.monotonic()
    list(pool.map(passwords.derive, [PASSWORD] * count, salts, [n] * count, [r] * count,
                  [p] * count))
    return time.monotonic() - started


async def _lookup_rate(view: ClusterView, user_ids: list[int],
                       seconds: float) -> tuple[float, float]:
    """(users looked up per second, Lookup calls per second): Router.Lookup batches of
    LOOKUP_BATCH ids at their owner routers, LOOKUP_INFLIGHT calls in flight, for `seconds`."""
    ring = Ring(p.node_id for p in view.membership.alive("router"))
    batches = []
    for router, ids in ring.owners(user_ids).items():
        ids = list(itertools.islice(itertools.cycle(ids), LOOKUP_BATCH))
        batches.append((view.peers.get(router), cluster_pb2.UserIds(user_ids=ids)))
    turn = itertools.cycle(batches)
    calls = 0
    stop_at = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal calls
        while time.monotonic() < stop_at:
            client, request = next(turn)
            await client.call(ROUTER["Lookup"], request, timeout=timing.UPSTREAM_TIMEOUT_S)
            calls += 1

    started = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(LOOKUP_INFLIGHT)))
    elapsed = time.monotonic() - started
    return calls * LOOKUP_BATCH / elapsed, calls / elapsed


def _rss_mb(pid: int) -> float:
    """VmRSS of a process in MB (MiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores each group of processes kept busy between `start()` and `stop()`."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._start: dict[int, float] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._start = {pid: _cpu_s(pid) for pids in self.groups.values() for pid in pids}
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._t0
        return {group: round(sum(_cpu_s(pid) - self._start[pid] for pid in pids) / wall, 2)
                for group, pids in self.groups.items() if pids}


def _listening_pid(port: int) -> int:
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


async def _wait_sessions(view: ClusterView, gateway_id: str, at_least: int) -> None:
    """Wait until the gateway's heartbeat reports `at_least` sessions."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        peer = view.membership.get(gateway_id)
        if peer is not None and peer.sessions >= at_least:
            return
        await asyncio.sleep(0.1)  # polling heartbeats until the deadline
    raise BenchError(f"gateway {gateway_id} did not report {at_least} sessions")


# ---- the cluster, and the --logins mode

@dataclass
class Target:
    """The cluster under test, as this process sees it."""

    view: ClusterView
    cfg: Config
    pids: dict[str, tuple[str, int]]  # node id -> (role, pid), for the spawned nodes

    def gateways(self) -> list[tuple[str, str, bytes]]:
        """(node id, client endpoint, server key) of every live gateway, by node id."""
        return [(p.node_id, p.info.endpoints["client"], p.info.client_key.encode())
                for p in self.view.membership.alive("gateway")]

    def pid(self, node_id: str, endpoint: str) -> int:
        """The pid of a gateway of this machine."""
        if node_id in self.pids:
            return self.pids[node_id][1]
        return _listening_pid(int(endpoint.rsplit(":", 1)[1]))

    def cpu_meter(self, *pools: ClientPool) -> CpuMeter:
        """A CpuMeter over the spawned nodes (by role) and the client workers of `pools`."""
        groups: dict[str, list[int]] = {role: [] for role in SPAWN}
        for role, pid in self.pids.values():
            groups[role].append(pid)
        groups["clients"] = [pid for pool in pools for pid in pool.pids]
        return CpuMeter(groups)


async def logins(target: Target, clients: int, sessions: int,
                 lookup_s: float) -> dict[str, Any]:
    """Password logins against the KDF ceiling, token resumes, lookups and idle sessions."""
    gateways = target.gateways()
    run_id = uuid.uuid4().hex[:8]
    accounts = [f"b{run_id}{i}" for i in range(clients)]
    spread = [(ep, key) for _, ep, key in itertools.islice(itertools.cycle(gateways), clients)]
    pool = ClientPool(1)  # logins cost the client nothing next to scrypt
    session_pool = ClientPool(CLIENT_WORKERS)
    try:
        await asyncio.to_thread(pool.open, spread)
        took, _ = await _step(pool, "Register", [client_pb2.RegisterRequest(
            account=a, password=PASSWORD, device="bench").SerializeToString()
            for a in accounts], KDF_INFLIGHT)
        registers_per_s = clients / took
        await _step(pool, "Logout", [client_pb2.LogoutRequest().SerializeToString()] * clients)
        n, r, p = await asyncio.to_thread(_scrypt_params, target.cfg, accounts[0])
        logins_per_s, kdf_per_s, users = await _logins_and_kdf(pool, accounts, n, r, p)
        lookups_per_s, lookup_calls_per_s = await _lookup_rate(
            target.view, [u.user_id for u in users], lookup_s)

        gw_id, gw_endpoint, gw_key = gateways[0]
        pid = target.pid(gw_id, gw_endpoint)
        before_sessions = target.view.membership.get(gw_id).sessions  # type: ignore[union-attr]
        rss_before = _rss_mb(pid)
        await asyncio.to_thread(session_pool.open, [(gw_endpoint, gw_key)] * sessions,
                                OPEN_WINDOW)
        resume = [client_pb2.ResumeRequest(token=users[i % clients].token, device=f"s{i}")
                  .SerializeToString() for i in range(sessions)]
        meter = target.cpu_meter(session_pool)
        meter.start()
        took, _ = await _step(session_pool, "Resume", resume, RESUME_WINDOW)
        resume_cores = meter.stop()
        resumes_per_s = sessions / took
        await _wait_sessions(target.view, gw_id, before_sessions + sessions)
        rss_after = _rss_mb(pid)
        await _step(session_pool, "Logout",
                    [client_pb2.LogoutRequest().SerializeToString()] * sessions, RESUME_WINDOW)
    finally:
        await asyncio.to_thread(session_pool.close)
        await asyncio.to_thread(pool.close)
    return {
        "logins_per_s": round(logins_per_s, 2), "kdf_per_s": round(kdf_per_s, 2),
        "login_ratio": round(logins_per_s / kdf_per_s, 3),
        "registers_per_s": round(registers_per_s, 2), "resumes_per_s": round(resumes_per_s),
        "lookups_per_s": round(lookups_per_s), "lookup_calls_per_s": round(lookup_calls_per_s),
        "resume_cpu_cores": resume_cores,
        "lookup": f"Router.Lookup batches of {LOOKUP_BATCH} user ids at the owner router, "
                  f"{LOOKUP_INFLIGHT} in flight, {lookup_s:g} s",
        "gateway_rss_mb_before": round(rss_before, 1), "gateway_rss_mb_after": round(rss_after, 1),
        "gateway_rss_mb_per_1000": round((rss_after - rss_before) * 1000 / sessions, 1),
        "scrypt": {"n": n, "r": r, "p": p, "maxmem_mb": passwords.maxmem(n, r, p) >> 20,
                   "kdf_processes": KDF_THREADS},
        "clients": clients, "sessions": sessions,
        "load": f"{clients} accounts registering and logging in ({KDF_INFLIGHT} in flight, "
                f"for {KDF_THREADS} scrypt threads), then {sessions} connections resuming "
                f"({RESUME_WINDOW} in flight per worker) on one gateway: raw client-plane "
                f"DEALERs (Curve) driven from {CLIENT_WORKERS} worker processes",
    }


async def _logins_and_kdf(pool: ClientPool, accounts: list[str], n: int, r: int,
                          p: int) -> tuple[float, float, list[client_pb2.LoginReply]]:
    """(logins/s, raw scrypt hashes/s, the login replies): one login per account through the
    cluster (KDF_INFLIGHT in flight), and as many hashes on a pool of KDF_THREADS processes as
    wide as the directory's scrypt pool (scrypt releases the GIL there), in alternating slices
    — kdf, logins, logins, kdf, … — so both see the same background load."""
    slices = KDF_SLICES if len(accounts) >= KDF_SLICES else 2
    parts = [range(len(accounts) * k // slices, len(accounts) * (k + 1) // slices)
             for k in range(slices)]
    users: list[client_pb2.LoginReply] = []
    login_s = kdf_s = 0.0

    async def log_in(part: range) -> float:
        took, replies = await _step(pool, "Login", [
            client_pb2.LoginRequest(account=accounts[i], password=PASSWORD,
                                    device="bench").SerializeToString()
            if i in part else None for i in range(len(accounts))], KDF_INFLIGHT)
        users.extend(replies)
        return took

    with ProcessPoolExecutor(KDF_THREADS, mp_context=mp.get_context("spawn")) as kdf_pool:
        await asyncio.to_thread(_kdf_slice, kdf_pool, KDF_THREADS, 1024, 8, 1)  # start, warm
        for first, second in zip(parts[::2], parts[1::2], strict=True):
            kdf_s += await asyncio.to_thread(_kdf_slice, kdf_pool, len(first), n, r, p)
            login_s += await log_in(first) + await log_in(second)
            kdf_s += await asyncio.to_thread(_kdf_slice, kdf_pool, len(second), n, r, p)
    return len(accounts) / login_s, len(accounts) / kdf_s, users


def _scrypt_params(cfg: Config, account: str) -> tuple[int, int, int]:
    """N, r, p of `account`'s stored password hash: what the directory really used."""
    with Store.from_config(cfg, pool_size=1) as store:
        creds = account_rows.credentials(store, account)
    if creds is None:
        raise BenchError(f"account {account} is not in SOIM_DB; is it the cluster's database?")
    _, n, r, p, _, _ = creds.pw_hash.split("$")
    return int(n), int(r), int(p)


# ---- the chat mode

async def chat(target: Target, clients: int, rate: float, seconds: float) -> dict[str, Any]:
    """Friend pairs plus one group: a fixed-rate phase (1:1 sends) for latency, an unthrottled
    phase (1:1 and group sends) for throughput, then every ack checked against the pushes and
    the database."""
    if clients % 2:
        raise BenchError("--clients must be even: the clients chat in friend pairs")
    if rate > clients * CLIENT_SEND_CAP_PER_S:
        raise BenchError(f"--rate {rate:g} needs more clients: one may send "
                         f"{CLIENT_SEND_CAP_PER_S:g} msgs/s under the gateway's session limit")
    run_id = uuid.uuid4().hex[:8]
    members = min(clients, GROUP_MAX)
    spread = [(ep, key) for _, ep, key in
              itertools.islice(itertools.cycle(target.gateways()), clients)]
    pool = ClientPool(CLIENT_WORKERS)
    try:
        await asyncio.to_thread(pool.open, spread)
        register = [client_pb2.RegisterRequest(account=f"c{run_id}{i}", password=PASSWORD)
                    .SerializeToString() for i in range(clients)]
        _, replies = await _step(pool, "Register", register,
                                 max(1, KDF_THREADS // pool.workers))
        users = [u.user_id for u in replies]
        friend = [users[i ^ 1] for i in range(clients)]
        for side in (0, 1):  # the even side asks, the odd side accepts
            _, replies = await _step(pool, "AddFriend", [
                client_pb2.AddFriendRequest(user_id=friend[i]).SerializeToString()
                if i % 2 == side else None for i in range(clients)])
        convs = {r.conv_id for r in replies}
        _, [created] = await _step(pool, "GroupCreate", [client_pb2.GroupCreateRequest(
            name=f"bench-{run_id}", user_limit=max(members, 2)).SerializeToString()])
        group = created.group.group_id
        await _step(pool, "GroupJoin", [None] + [
            client_pb2.GroupJoinRequest(group_id=group).SerializeToString()
            for _ in range(1, members)])
        one_to_one = [[("to_user", friend[i])] for i in range(clients)]
        mixed = [one_to_one[i] * (GROUP_EVERY - 1) + [("to_group", group)] * (i < members)
                 for i in range(clients)]
        meter = target.cpu_meter(pool)
        meter.start()
        timed = await asyncio.to_thread(pool.chat, one_to_one, seconds, rate, f"{run_id}t")
        timed_cores = meter.stop()
        meter.start()
        flood = await asyncio.to_thread(pool.chat, mixed, seconds, 0, f"{run_id}f")
        flood_cores = meter.stop()
    finally:
        await asyncio.to_thread(pool.close)
    acked, pushes = _audit([(timed, one_to_one), (flood, mixed)], members)
    stored = await asyncio.to_thread(_check_store, target.cfg, acked, convs | {group})
    ceiling = await asyncio.to_thread(_fabric_ceiling, target.cfg.keys_dir)
    latencies = sorted(ns for log in timed for ns in log.latencies_ns)
    acks = sorted(ns for log in timed for ns in log.ack_latencies_ns)
    loaded = sorted(ns for log in flood for ns in log.latencies_ns)
    errors = Counter[str]()
    for log in timed + flood:
        errors.update(log.errors)
    return {
        "delivered_per_s": round(sum(log.delivered for log in flood) / seconds),
        "delivered_group_per_s": round(sum(log.delivered_group for log in flood) / seconds),
        "sent_per_s": round(sum(log.sent for log in flood) / seconds),
        "send_cap_per_s": round(clients * CLIENT_SEND_CAP_PER_S),
        **{f"p{q}_ms": _percentile_ms(latencies, q) for q in (50, 95, 99)},
        "timed_sent_per_s": round(sum(log.sent for log in timed) / seconds),
        "ack_p50_ms": _percentile_ms(acks, 50), "ack_p99_ms": _percentile_ms(acks, 99),
        "unthrottled_p50_ms": _percentile_ms(loaded, 50),
        "unthrottled_p99_ms": _percentile_ms(loaded, 99),
        "lost": pushes["lost"] + stored["lost"],
        "duplicated": pushes["duplicated"] + stored["duplicated"],
        "ceiling_per_s": round(ceiling),
        "acked": len(acked), "pushes": pushes, "store": stored, "send_errors": dict(errors),
        "cpu_cores": {"timed": timed_cores, "unthrottled": flood_cores},
        "clients": clients, "group_members": members, "rate": rate, "duration_s": seconds,
        "load": f"{clients} clients in friend pairs, the first {members} also in one group, "
                f"spread over the gateways, raw client-plane DEALERs (Curve) driven from "
                f"{CLIENT_WORKERS} worker processes. Timed phase: 1:1 sends at {rate:g}/s in "
                f"all. Unthrottled phase: each client keeps {WINDOW} sends in flight (at most "
                f"{CLIENT_SEND_CAP_PER_S:g}/s, under the gateway's session limit), every "
                f"{GROUP_EVERY}th to the group; delivered = pushes received. No receipts.",
        "ceiling": f"bench fabric's raw Curve DEALER→ROUTER echo, {CEILING_INFLIGHT} in "
                   f"flight, {CEILING_S:g} s, after the chat phases",
    }


async def _step(pool: ClientPool, name: str, payloads: list[bytes | None],
                window: int = 0) -> tuple[float, list[Any]]:
    """payloads[i] (None: nothing) on connection i, at most `window` in flight per worker (0:
    all at once); (seconds from the first send to the last reply, the replies)."""
    took, results = await asyncio.to_thread(pool.call, name, payloads, window or len(payloads))
    return took, _ok(name, results, CLIENT[name].reply.FromString)


def _audit(phases: list[tuple[list[ChatLog], list[list[tuple[str, int]]]]],
           members: int) -> tuple[list[tuple[int, int, int]], dict[str, int]]:
    """Every acked message of the phases as (conv_id, seq, msg_id), and how its pushes went:
    each must reach the other side of its pair, or every other group member, exactly once."""
    received: dict[int, Counter[int]] = {}
    expected: list[tuple[int, list[int]]] = []
    acked = []
    for logs, targets in phases:
        workers = len(logs)
        for w, log in enumerate(logs):
            for j, got in enumerate(log.received):
                received.setdefault(w + j * workers, Counter()).update(got)
            for j, turn, conv_id, seq, msg_id in log.acks:
                sender = w + j * workers
                field, _ = targets[sender][turn % len(targets[sender])]
                to = [sender ^ 1] if field == "to_user" else [
                    m for m in range(members) if m != sender]
                expected.append((msg_id, to))
                acked.append((conv_id, seq, msg_id))
    lost = sum(not received.get(r, Counter())[msg_id] for msg_id, to in expected for r in to)
    return acked, {"expected": sum(len(to) for _, to in expected), "lost": lost,
                   "duplicated": sum(n - 1 for got in received.values() for n in got.values()
                                     if n > 1)}


def _check_store(cfg: Config, acked: list[tuple[int, int, int]],
                 convs: set[int]) -> dict[str, int]:
    """The message tables against the acks: every acked (conv_id, seq, msg_id) stored, each
    message once, seqs contiguous from 1 in every conversation of the run."""
    rows: list[tuple[Any, ...]] = []
    with Store.from_config(cfg, pool_size=1) as store:
        for conv_id in convs:
            rows += store.query("message", conv_id, "SELECT conv_id, seq, msg_id, sender, "
                                "client_msg_id FROM {t} WHERE conv_id = %s", (conv_id,))
    at = {(int(r[0]), int(r[1])): int(r[2]) for r in rows}
    copies = Counter(int(r[2]) for r in rows) + Counter((r[0], r[3], r[4]) for r in rows)
    top: dict[int, int] = {}
    for conv_id, seq in at:
        top[conv_id] = max(top.get(conv_id, 0), seq)
    return {"rows": len(rows),
            "lost": sum(at.get((conv_id, seq)) != msg_id for conv_id, seq, msg_id in acked),
            "duplicated": sum(n - 1 for n in copies.values() if n > 1),
            "seq_gaps": sum(top.values()) - len(at)}


def _fabric_ceiling(keys_dir: Path) -> float:
    """Round trips/s of bench fabric's raw pyzmq echo (Curve DEALER→ROUTER, no envelope), its
    server in a process of its own, CEILING_INFLIGHT in flight for CEILING_S."""
    spawn = mp.get_context("spawn")
    ports, stop, go = spawn.Queue(), spawn.Event(), spawn.Event()
    proc = spawn.Process(target=bench_fabric._serve, args=(str(keys_dir), ports, stop, go),
                         daemon=True)
    proc.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        try:
            _, raw_port, _ = ports.get(timeout=SETTLE_S)
        except queue.Empty:
            raise BenchError("bench fabric's echo server did not start") from None
        pair = keys.load_cluster(keys_dir)
        sock.linger = 0
        sock.rcvtimeo = int(SETTLE_S * 1000)  # a lost echo raises zmq.Again, not a hang
        sock.curve_secretkey, sock.curve_publickey = pair.secret, pair.public
        sock.curve_serverkey = pair.public
        sock.connect(f"tcp://127.0.0.1:{raw_port}")
        sock.send(bench_fabric.PAYLOAD)
        sock.recv()  # connect and warm up
        done, took = bench_fabric._ceiling_slice(sock, CEILING_INFLIGHT, CEILING_S)
    finally:
        sock.close(0)
        ctx.term()
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    return done / took


def _percentile_ms(ordered: list[int], q: int) -> float | None:
    """The q-th percentile of sorted nanoseconds, in ms (None when there are none)."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) * q // 100, len(ordered) - 1)] / 1e6, 2)


# ---- the command

async def _run(cfg: Config, cluster: LocalCluster | None, opts: dict[str, Any]) -> dict[str, Any]:
    async with ClusterView(cfg) as view:
        pids: dict[str, tuple[str, int]] = {}
        if cluster is not None:
            nodes = [n for role, count in SPAWN.items() for n in cluster.start(role, count)]
            try:
                await cluster.wait_alive(view, nodes, SETTLE_S)
            except RuntimeError as err:
                raise BenchError(f"the throwaway cluster did not start: {err}") from None
            pids = {n.node_id: (n.role, n.pid) for n in nodes}
        else:
            alive = await view.settle(3.0)
            roles = Counter(p.role for p in alive)
            if not all(roles[r] for r in ("gateway", "router", "directory")):
                raise BenchError(f"cluster {cfg.cluster} needs a gateway, a router and a "
                                 f"directory alive; found {dict(roles)}")
        target = Target(view, cfg, pids)
        if opts["logins"]:
            return await logins(target, opts["clients"], opts["sessions"],
                                opts["duration"] or LOOKUP_S)
        return await chat(target, opts["clients"], opts["rate"], opts["duration"] or CHAT_S)


def _options(args: dict[str, Any]) -> dict[str, Any]:
    """The numeric options, checked; duration is None when not given (its default depends on
    the mode)."""
    opts: dict[str, Any] = {}
    for name, kind, low in (("--clients", int, 2), ("--sessions", int, 1),
                            ("--rate", float, 1.0), ("--duration", float, 0.5)):
        raw = args.get(name)
        if raw is None:
            opts[name[2:]] = None
            continue
        try:
            value = kind(raw)
        except ValueError:
            value = low - 1
        if value < low:
            raise BenchError(f"{name} must be a number of at least {low}, got {raw!r}")
        opts[name[2:]] = value
    return opts


def run(args: dict[str, Any]) -> int:
    """Entry point from soimctl: `bench chat [--json] [--spawn] [--logins] …`."""
    try:
        opts = _options(args)
        opts["logins"] = bool(args.get("--logins"))
        env = dict(os.environ)
        if args.get("--spawn"):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up as on Ctrl-C
            with throwaway(env) as cluster:
                result = _measure(cluster.env, cluster, opts)
        else:
            result = _measure(env, None, opts)
    except (BenchError, StoreError) as err:
        print(f"soimctl: bench chat: {err}", file=sys.stderr)
        return 1
    result["spawn"] = bool(args.get("--spawn"))
    print(json.dumps(result, indent=None if args.get("--json") else 2))
    return 0


def _measure(env: dict[str, str], cluster: LocalCluster | None,
             opts: dict[str, Any]) -> dict[str, Any]:
    cfg = Config.from_env(env, role="soimctl")
    result = asyncio.run(_run(cfg, cluster, opts))
    result.update(mode="logins" if opts["logins"] else "chat", db=cfg.db.split(":", 1)[0],
                  redis=bool(cfg.redis_url), cpus=os.cpu_count(),
                  python=platform.python_version())
    return result
