"""soimctl bench chat: a real cluster under client load — logins, resumes, presence lookups and
idle sessions (--logins), with the KDF ceiling measured in the same run.

Role: one benchmark command. With --spawn it starts a throwaway cluster (tools.local_cluster: 2
gateways, 2 routers, 1 directory, 1 storage) on the SOIM_DB / SOIM_REDIS_URL it is given and
removes it afterwards; without, it targets the running cluster of SOIM_CLUSTER (SOIM_KEYS_DIR).
The load comes from client worker processes (`ClientPool`): each holds many raw client
connections and drives them synchronously, one request in flight per connection, so neither
asyncio nor the client library's timers are part of what is measured.
Peer sockets: in the workers, one DEALER per client connection (Curve with a fresh keypair) to a
gateway's client ROUTER; here, a `ClusterView` (zeroconf, events SUB) and DEALERs to the routers'
RPC ROUTERs for Router.Lookup (cluster keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import platform
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import zmq
from google.protobuf.message import Message

from fabric import envelope, timing
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
from tools.cluster_view import ClusterView
from tools.local_cluster import LocalCluster, throwaway

CLIENT_WORKERS = max(2, os.cpu_count() or 2)
"""Processes the client connections are spread over."""
PASSWORD = "bench-password-1"
CALL_TIMEOUT_S = 60.0
"""Deadline of one exchange (every request of a phase answered)."""
RESUME_WINDOW = 64
"""Resumes each worker keeps in flight."""
LOOKUP_BATCH = 100
LOOKUP_INFLIGHT = 16
LOOKUP_S = 5.0
"""Default length of the lookup phase (--duration)."""
SETTLE_S = 30.0
"""How long to wait for the spawned nodes to be alive, or a gateway to report its sessions."""
SPAWN = {"gateway": 2, "router": 2, "directory": 1, "storage": 1}


class BenchError(Exception):
    """The benchmark could not run or its clients failed; the message says why."""


# ---- client worker processes

@dataclass
class Exchange:
    """What one worker's share of a phase gave: when it ran and each request's outcome."""

    started: float
    finished: float
    results: list[tuple[int, bytes]]  # (error code, reply payload) per request


def _client_worker(conn: Connection) -> None:
    """Body of a worker process: open sockets and run exchanges on them as the parent asks.

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
                deadline_ms = int((time.time() + CALL_TIMEOUT_S) * 1000)
                for sock in socks:  # keepalive; the replies are skipped by the next exchange
                    with contextlib.suppress(zmq.Again):
                        sock.send(encoder.request(CLIENT["Ping"].name, next(rids), deadline_ms,
                                                  ping), zmq.NOBLOCK)
                continue
            command, arg = conn.recv()
            if command == "open":
                for endpoint, key in arg:
                    sock = ctx.socket(zmq.DEALER)
                    sock.linger = 0
                    anonymous_client(sock, key)
                    sock.connect(endpoint)
                    socks.append(sock)
                arg = ("Ping", [ping] * len(socks), len(socks))
            elif command != "call":
                return
            name, payloads, window = arg
            conn.send(_exchange(socks, encoder, rids, name, payloads, window))
    except (EOFError, BrokenPipeError):
        return
    finally:
        for sock in socks:
            sock.close(0)
        ctx.term()


def _exchange(socks: list[zmq.Socket], encoder: envelope.Encoder, rids: Iterator[int],
              name: str, payloads: Sequence[bytes], window: int) -> Exchange:
    """Send payloads[i] as client.<name> on socks[i], at most `window` in flight; wait for all."""
    method = CLIENT[name].name
    results: list[tuple[int, bytes]] = [(pb.TIMEOUT, b"")] * len(payloads)
    waiting: dict[zmq.Socket, tuple[int, int]] = {}
    poller = zmq.Poller()
    started = last = time.monotonic()
    deadline = started + CALL_TIMEOUT_S
    deadline_ms = int((time.time() + CALL_TIMEOUT_S) * 1000)
    sent = 0
    while (sent < len(payloads) or waiting) and time.monotonic() < deadline:
        while sent < len(payloads) and len(waiting) < window:
            sock, rid = socks[sent], next(rids)
            sock.send(encoder.request(method, rid, deadline_ms, payloads[sent]))
            poller.register(sock, zmq.POLLIN)
            waiting[sock] = (sent, rid)
            sent += 1
        for sock, _ in poller.poll(100):
            index, rid = waiting[sock]
            try:
                env = envelope.decode([sock.recv()], timing.CLUSTER_MAX_FRAME_BYTES)
            except envelope.EnvelopeError:
                continue
            if env.header.kind != pb.REPLY or env.header.request_id != rid:
                continue  # a push, or the reply to an earlier keepalive ping
            results[index] = (env.header.error, env.payload)
            poller.unregister(sock)
            del waiting[sock]
            last = time.monotonic()
    return Exchange(started, last, results)


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
        self.size = 0

    def open(self, targets: Sequence[tuple[str, bytes]]) -> int:
        """Connect one client per (endpoint, server key); return how many answered a Ping."""
        n = len(self._pipes)
        replies = self._ask([("open", list(targets[w::n])) for w in range(n)])
        self.size += len(targets)
        return sum(code == pb.OK for r in replies for code, _ in r.results)

    def call(self, name: str, payloads: Sequence[bytes], window: int) -> tuple[float, list]:
        """payloads[i] to connection i; (seconds from first send to last reply, results)."""
        n = len(self._pipes)
        replies = self._ask([("call", (name, list(payloads[w::n]), window)) for w in range(n)])
        results: list[tuple[int, bytes]] = [(pb.TIMEOUT, b"")] * len(payloads)
        for w, reply in enumerate(replies):
            results[w::n] = reply.results
        elapsed = max(r.finished for r in replies) - min(r.started for r in replies)
        return max(elapsed, 1e-9), results

    def _ask(self, commands: list[tuple[str, Any]]) -> list[Exchange]:
        for pipe, command in zip(self._pipes, commands, strict=True):
            pipe.send(command)
        deadline = time.monotonic() + CALL_TIMEOUT_S + 30
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


def _ok(what: str, results: list[tuple[int, bytes]], parse: Callable[[bytes], Message]) -> list:
    """Parsed replies; BenchError naming the error codes if any request failed."""
    bad = Counter(pb.ErrorCode.Name(code) for code, _ in results if code != pb.OK)
    if bad:
        raise BenchError(f"{what}: {sum(bad.values())} of {len(results)} failed: {dict(bad)}")
    return [parse(payload) for _, payload in results]


# ---- measurements

def _kdf_rate(count: int, n: int, r: int, p: int) -> float:
    """Hashes/s of raw hashlib.scrypt at these parameters, `count` hashes on KDF_THREADS
    processes (the directory's scrypt pool is as wide; scrypt releases the GIL there)."""
    with ProcessPoolExecutor(KDF_THREADS, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(passwords.derive, [PASSWORD] * KDF_THREADS, [b"warm"] * KDF_THREADS,
                      [1024] * KDF_THREADS))
        started = time.monotonic()
        salts = [os.urandom(passwords.SALT_BYTES) for _ in range(count)]
        list(pool.map(passwords.derive, [PASSWORD] * count, salts, [n] * count, [r] * count,
                      [p] * count))
        return count / (time.monotonic() - started)


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


# ---- the --logins mode

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
    pool = ClientPool(min(clients, CLIENT_WORKERS))
    session_pool = ClientPool(CLIENT_WORKERS)
    try:
        if await asyncio.to_thread(pool.open, spread) != clients:
            raise BenchError("not every client connection answered a Ping")
        register = [client_pb2.RegisterRequest(account=a, password=PASSWORD, device="bench")
                    .SerializeToString() for a in accounts]
        took, results = await asyncio.to_thread(pool.call, "Register", register, clients)
        _ok("Register", results, client_pb2.LoginReply.FromString)
        registers_per_s = clients / took
        _, results = await asyncio.to_thread(
            pool.call, "Logout", [client_pb2.LogoutRequest().SerializeToString()] * clients,
            clients)
        _ok("Logout", results, client_pb2.LogoutReply.FromString)
        login = [client_pb2.LoginRequest(account=a, password=PASSWORD, device="bench")
                 .SerializeToString() for a in accounts]
        took, results = await asyncio.to_thread(pool.call, "Login", login, clients)
        users = _ok("Login", results, client_pb2.LoginReply.FromString)
        logins_per_s = clients / took

        n, r, p = await asyncio.to_thread(_scrypt_params, target.cfg, accounts[0])
        kdf_per_s = await asyncio.to_thread(_kdf_rate, clients, n, r, p)
        lookups_per_s, lookup_calls_per_s = await _lookup_rate(
            target.view, [u.user_id for u in users], lookup_s)

        gw_id, gw_endpoint, gw_key = gateways[0]
        pid = target.pid(gw_id, gw_endpoint)
        before_sessions = target.view.membership.get(gw_id).sessions  # type: ignore[union-attr]
        rss_before = _rss_mb(pid)
        if await asyncio.to_thread(session_pool.open, [(gw_endpoint, gw_key)] * sessions) \
                != sessions:
            raise BenchError("not every session connection answered a Ping")
        resume = [client_pb2.ResumeRequest(token=users[i % clients].token, device=f"s{i}")
                  .SerializeToString() for i in range(sessions)]
        meter = target.cpu_meter(session_pool)
        meter.start()
        took, results = await asyncio.to_thread(session_pool.call, "Resume", resume,
                                                RESUME_WINDOW)
        resume_cores = meter.stop()
        _ok("Resume", results, client_pb2.LoginReply.FromString)
        resumes_per_s = sessions / took
        await _wait_sessions(target.view, gw_id, before_sessions + sessions)
        rss_after = _rss_mb(pid)
        await asyncio.to_thread(
            session_pool.call, "Logout",
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
        "load": f"{clients} client connections logging in at once and {sessions} resuming "
                f"({RESUME_WINDOW} in flight per worker) on one gateway, raw client-plane "
                f"DEALERs (Curve) driven from {CLIENT_WORKERS} worker processes",
    }


def _scrypt_params(cfg: Config, account: str) -> tuple[int, int, int]:
    """N, r, p of `account`'s stored password hash: what the directory really used."""
    with Store.from_config(cfg, pool_size=1) as store:
        creds = account_rows.credentials(store, account)
    if creds is None:
        raise BenchError(f"account {account} is not in SOIM_DB; is it the cluster's database?")
    _, n, r, p, _, _ = creds.pw_hash.split("$")
    return int(n), int(r), int(p)


# ---- the command

async def _run(cfg: Config, cluster: LocalCluster | None, opts: dict[str, Any]) -> dict[str, Any]:
    async with ClusterView(cfg) as view:
        pids: dict[str, tuple[str, int]] = {}
        if cluster is not None:
            nodes = [n for role, count in SPAWN.items() for n in cluster.start(role, count)]
            await cluster.wait_alive(view, nodes, SETTLE_S)
            pids = {n.node_id: (n.role, n.pid) for n in nodes}
        else:
            alive = await view.settle(3.0)
            roles = Counter(p.role for p in alive)
            if not all(roles[r] for r in ("gateway", "router", "directory")):
                raise BenchError(f"cluster {cfg.cluster} needs a gateway, a router and a "
                                 f"directory alive; found {dict(roles)}")
        target = Target(view, cfg, pids)
        return await logins(target, opts["clients"], opts["sessions"],
                            opts["duration"] or LOOKUP_S)


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
    result.update(mode="logins", db=cfg.db.split(":", 1)[0], redis=bool(cfg.redis_url),
                  cpus=os.cpu_count(), python=platform.python_version())
    return result
