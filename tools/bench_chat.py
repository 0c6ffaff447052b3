"""soimctl bench chat: a real cluster under client load — chat messages of a pattern (1:1 pairs,
groups or a mix: delivered per second, send→push latency at fixed rates, CPU of every node per
message, memory of the nodes, nothing lost or duplicated) or, with --logins, logins, resumes,
presence lookups and idle sessions; each with a ceiling measured in the same run.

Role: one benchmark command. With --spawn it starts a throwaway cluster (tools.local_cluster: 2
gateways, 2 routers, 1 directory, 1 storage) on the SOIM_DB / SOIM_REDIS_URL it is given and
removes it afterwards; without, it targets the running cluster of SOIM_CLUSTER (SOIM_KEYS_DIR).
The load comes from the client worker processes of `tools.bench_clients`; the cluster under
test is a `tools.bench_target.Target`; the --logins mode lives in `tools.bench_logins`.
Peer sockets: those of the client workers; here, a `ClusterView` (zeroconf, events SUB),
DEALERs to the routers' RPC ROUTERs for Router.Lookup (cluster keys), a DEALER to
bench_fabric's raw echo ROUTER (the ceiling, in a server process of its own) and the database
connections of a shard_store `Store`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing as mp
import os
import platform
import queue
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from fabric import keys
from fabric.config import Config
from nodes.directory.context import KDF_THREADS
from nodes.gateway.options import MAX_SESSION_RATE, GatewayOptions
from schema import client_pb2
from schema import common_pb2 as pb
from shard_store.backend import StoreError
from shard_store.settings import StoreSettings
from shard_store.store import Store
from tools import bench_fabric
from tools.bench_clients import (
    CHAT_WORKERS,
    WINDOW,
    BenchError,
    ChatLog,
    ClientPool,
)
from tools.bench_logins import logins
from tools.bench_target import PASSWORD, SETTLE_S, SPAWN, Target, bucket_quantile_ms, step
from tools.bench_ws import JSON, PROTO
from tools.cluster_view import ClusterView
from tools.local_cluster import LocalCluster, throwaway

LOOKUP_S = 5.0
"""Default length of the lookup phase (--duration)."""
CHAT_S = 30.0
"""Default length of each chat phase (--duration)."""
GROUP_EVERY = 10
"""In the mixed pattern every GROUP_EVERY-th send of a client goes to its group."""
GROUP_SIZE = 20
"""Members of each group unless --group-size says otherwise."""
GROUP_MAX = 999
"""Largest --group-size (a group admits 1,000 members; the last group may take one more)."""
Addressee = tuple[str, int]
PATTERNS: dict[str, Callable[[Addressee, Addressee], list[Addressee]]] = {
    "pairs": lambda friend, group: [friend],
    "group": lambda friend, group: [group],
    "mixed": lambda friend, group: [friend] * (GROUP_EVERY - 1) + [group],
}
"""What each client sends to, in turn, given its friend and its group."""
PATTERN_TEXT = {
    "pairs": "every message 1:1 to the friend",
    "group": "every message to the client's group",
    "mixed": f"every {GROUP_EVERY}th message to the client's group, the rest 1:1",
}
DEFAULT_RATE = 2000.0
"""Messages per second of the timed phase when neither --rate nor --rates is given."""
CEILING_S = 3.0
CEILING_INFLIGHT = 64
TRANSPORTS = {
    "zmq": "raw client-plane DEALERs (Curve)",
    "ws": "WebSockets (subprotocol soim.proto: binary envelope frames, no TLS)",
    "wsjson": "WebSockets (subprotocol soim.json: JSON text frames, as the web client; no TLS)",
}
"""What the chat clients connect with (--transport)."""
PLANES = {"zmq": "client", "ws": "web", "wsjson": "web"}
"""The gateway endpoint each transport connects to."""
SUBPROTOCOLS = {"zmq": PROTO, "ws": PROTO, "wsjson": JSON}
"""The frames each transport carries: envelope frames, or soim.json's JSON."""
SPAWN_BURST_S = 4
"""A spawned cluster's gateways get SOIM_SESSION_BURST = this many seconds of --session-rate
(the ratio of the defaults, 200 to 50)."""


# ---- the chat mode


async def chat(target: Target, clients: int, opts: dict[str, Any]) -> dict[str, Any]:
    """Friend pairs and groups of opts["group_size"]; the chat of opts["pattern"] (`PATTERNS`):
    one fixed-rate phase per rate of opts["rates"] (each with its first opts["warmup"] seconds
    measured apart) for latency and CPU per message, an unthrottled phase for throughput, then
    every ack checked against the pushes and the database."""
    if clients % 2:
        raise BenchError("--clients must be even: the clients chat in friend pairs")
    cap, rates, seconds = opts["session_rate"], opts["rates"], opts["duration"] or CHAT_S
    if max(rates) > clients * cap:
        raise BenchError(
            f"--rate {max(rates):g} needs more clients: one may send {cap:g} "
            f"msgs/s, the gateway's session limit (--session-rate)"
        )
    run_id = uuid.uuid4().hex[:8]
    gateways = target.gateways(PLANES[opts["transport"]])
    if not gateways:
        raise BenchError("no live gateway has a WebSocket plane (SOIM_WEB_PORT)")
    spread = [(ep, key) for _, ep, key in itertools.islice(itertools.cycle(gateways), clients)]
    pool = ClientPool(CHAT_WORKERS)
    try:
        await asyncio.to_thread(pool.open, spread, 0, SUBPROTOCOLS[opts["transport"]])
        friend, convs, groups = await _befriend(pool, run_id, clients, opts["group_size"])
        group_of = {i: gid for gid, members in groups.items() for i in members}
        targets = [
            PATTERNS[opts["pattern"]](("to_user", friend[i]), ("to_group", group_of[i]))
            for i in range(clients)
        ]
        meter = target.cpu_meter(pool)
        timed: dict[float, tuple[list[ChatLog], dict[str, Any]]] = {}
        commits: tuple[dict[float, float], dict[float, float]] = ({}, {})
        for n, rate in enumerate(rates):
            before = await asyncio.to_thread(target.commit_buckets)
            meter.start()
            logs = await asyncio.to_thread(
                pool.chat,
                targets,
                opts["warmup"] + seconds,
                rate,
                cap,
                f"{run_id}t{n}-",
                opts["warmup"],
            )
            timed[rate] = logs, {"cpu_cores": meter.stop(), **_cost(logs, meter.nodes_s())}
            if n == 0:
                commits = before, await asyncio.to_thread(target.commit_buckets)
        meter.start()
        flood = await asyncio.to_thread(pool.chat, targets, seconds, 0, cap, f"{run_id}f")
        flood_cores = meter.stop()
        flood_cost = _cost(flood, meter.nodes_s())
        memory = await asyncio.to_thread(target.node_memory_mb)
    finally:
        await asyncio.to_thread(pool.close)
    acked, pushes = _audit(
        [(logs, targets) for logs, _ in timed.values()] + [(flood, targets)], groups
    )
    stored = await asyncio.to_thread(_check_store, target.cfg, acked, convs | set(groups))
    ceiling = await asyncio.to_thread(_fabric_ceiling, target.cfg.keys_dir)
    first, _ = timed[rates[0]]
    errors = Counter[str]()
    for log in [log for logs, _ in timed.values() for log in logs] + flood:
        errors.update(log.errors)
    sent = sum(log.sent for log in flood)
    sent_group = sum(log.sent_group for log in flood)
    delivered_group = sum(log.delivered_group for log in flood)
    delivered = sum(log.delivered for log in flood)
    return {
        "pattern": opts["pattern"],
        "transport": opts["transport"],
        "delivered_per_s": round(delivered / seconds),
        "delivered_group_per_s": round(delivered_group / seconds),
        "delivered_pairs_per_s": round((delivered - delivered_group) / seconds),
        "sent_per_s": round(sent / seconds),
        "sent_group_per_s": round(sent_group / seconds),
        "sent_pairs_per_s": round((sent - sent_group) / seconds),
        "sent_per_ceiling": round(sent / seconds / ceiling, 4) if ceiling else None,
        "send_cap_per_s": round(clients * cap),
        **_latencies(first),
        "timed_sent_per_s": round(sum(log.sent for log in first) / (opts["warmup"] + seconds)),
        **{f"commit_p{q}_ms": bucket_quantile_ms(*commits, q / 100) for q in (50, 99)},
        "rates": {
            f"{rate:g}": {
                **_latencies(logs),
                **cost,
                "sent_per_s": round(sum(log.sent for log in logs) / (opts["warmup"] + seconds)),
            }
            for rate, (logs, cost) in timed.items()
        },
        "unthrottled": {**_latencies(flood), **flood_cost, "cpu_cores": flood_cores},
        "unthrottled_p50_ms": _percentile_ms(_pushes(flood, "all"), 50),
        "unthrottled_p99_ms": _percentile_ms(_pushes(flood, "all"), 99),
        "cpu_us_per_msg": timed[rates[0]][1]["cpu_us_per_msg"],
        "node_memory_mb": memory,
        "lost": pushes["lost"] + stored["lost"],
        "duplicated": pushes["duplicated"] + stored["duplicated"],
        "ceiling_per_s": round(ceiling),
        "acked": len(acked),
        "pushes": pushes,
        "store": stored,
        "send_errors": dict(errors),
        "cpu_cores": {"timed": timed[rates[0]][1]["cpu_cores"], "unthrottled": flood_cores},
        "clients": clients,
        "group_size": opts["group_size"],
        "groups": len(groups),
        "rate": rates[0],
        "duration_s": seconds,
        "warmup_s": opts["warmup"],
        "session_rate": cap,
        "load": f"{clients} clients in friend pairs and in groups of up to "
        f"{opts['group_size']}, spread over the gateways, {TRANSPORTS[opts['transport']]} "
        f"driven from {CHAT_WORKERS} worker process(es); pattern "
        f"{opts['pattern']}: {PATTERN_TEXT[opts['pattern']]}. One timed phase per rate "
        f"({', '.join(f'{r:g}' for r in rates)} msgs/s in all, evenly over the "
        f"clients): {opts['warmup']:g} s of warm-up (warmup_p50_ms/warmup_p99_ms; the "
        f"first send of each conversation loads its access check and its seq) before "
        f"the {seconds:g} s of p50_ms … p99_ms (every push; 'pairs' and 'group' apart) "
        f"and ack_p50_ms/ack_p99_ms; the top-level figures are the first rate's. "
        f"Unthrottled phase: each client keeps {WINDOW} sends in flight, at most "
        f"{cap:g}/s (the session limit); delivered = pushes received. No receipts.",
        "cpu": "cpu_us_per_msg: CPU (user+system, /proc/PID/stat) of every node process over "
        "the phase, from its start to its last push, per message acked; "
        "cpu_us_per_push per push received (the same for 1:1). node_memory_mb: RSS "
        "and peak RSS (VmHWM) summed over the node processes after the phases",
        "ceiling": f"bench fabric's raw Curve DEALER→ROUTER echo, {CEILING_INFLIGHT} in "
        f"flight, {CEILING_S:g} s, after the chat phases; sent_per_ceiling = "
        f"sent_per_s / ceiling_per_s",
        "commit": "commit_p50_ms/commit_p99_ms: the storage nodes' flush transactions (INSERTs "
        "and the durable COMMIT) during the first timed phase, the upper bound of "
        "the soim_storage_commit_seconds bucket holding that quantile; every ack "
        "waits for one",
    }


async def _befriend(
    pool: ClientPool, run_id: str, clients: int, group_size: int
) -> tuple[list[int], set[int], dict[int, list[int]]]:
    """Register a user per connection, make friends of 0-1, 2-3, … and groups of consecutive
    connections (`group_size` each, the last one at least 2); (the friend's user id per
    connection, the 1:1 conversations, group id -> its connections)."""
    users = await _register(pool, run_id, clients)
    friend = [users[i ^ 1] for i in range(clients)]
    for side in (0, 1):  # the even side asks, the odd side accepts
        _, replies = await step(
            pool,
            "AddFriend",
            [
                client_pb2.AddFriendRequest(user_id=friend[i]).SerializeToString()
                if i % 2 == side
                else None
                for i in range(clients)
            ],
        )
    convs = {r.conv_id for r in replies}
    firsts = list(range(0, clients, group_size))
    if len(firsts) > 1 and clients - firsts[-1] < 2:
        firsts.pop()  # a group of one would send to nobody: its member joins the one before
    _, created = await step(
        pool,
        "GroupCreate",
        [
            client_pb2.GroupCreateRequest(
                name=f"bench-{run_id}-{i}", user_limit=group_size + 1
            ).SerializeToString()
            if i in firsts
            else None
            for i in range(clients)
        ],
    )
    ids = [c.group.group_id for c in created]
    first_of = [max(f for f in firsts if f <= i) for i in range(clients)]
    await step(
        pool,
        "GroupJoin",
        [
            None
            if i in firsts
            else client_pb2.GroupJoinRequest(
                group_id=ids[firsts.index(first_of[i])]
            ).SerializeToString()
            for i in range(clients)
        ],
    )
    groups: dict[int, list[int]] = {}
    for i in range(clients):
        groups.setdefault(ids[firsts.index(first_of[i])], []).append(i)
    return friend, convs, groups


REGISTER_ROUNDS = 3
"""Rounds of Register (and Login) requests a connection gets at most. A Register answered
TIMEOUT may still have landed (the directory created the account, the answer came too late),
so it is asked again; ALREADY_EXISTS to that second Register means the account is this
connection's, which then logs in to it. Each request is bounded (REQUEST_TIMEOUT_S), so the
registration is too."""


def _next_request(asked: str, code: int, timed_out_before: bool) -> str:
    """What a connection asks after `asked` answered `code`: "" (done: it has its account and
    its session), "Register" or "Login" (again), or "fail". `timed_out_before`: a Register of
    this connection timed out, so its account may exist."""
    if code == pb.OK:
        return ""
    if code == pb.TIMEOUT:
        return asked
    if asked == "Register" and code == pb.ALREADY_EXISTS and timed_out_before:
        return "Login"
    return "fail"


def _auth_request(name: str, account: str) -> bytes:
    """A Register or a Login of `account` with the bench's password."""
    if name == "Register":
        return client_pb2.RegisterRequest(account=account, password=PASSWORD).SerializeToString()
    return client_pb2.LoginRequest(account=account, password=PASSWORD).SerializeToString()


async def _register(pool: ClientPool, run_id: str, clients: int) -> list[int]:
    """A new account on each connection, logged in; the user ids in connection order.
    BenchError if a request failed or some still timed out after REGISTER_ROUNDS rounds."""
    window = max(1, KDF_THREADS // pool.workers)
    users = [0] * clients
    pending = dict.fromkeys(range(clients), "Register")  # connection -> what it asks next
    timed_out: set[int] = set()
    failed: Counter[str] = Counter()
    for _ in range(REGISTER_ROUNDS):
        for name in ("Register", "Login"):
            asked = [i for i, what in pending.items() if what == name]
            if not asked:
                continue
            payloads: list[bytes | None] = [None] * clients
            for i in asked:
                payloads[i] = _auth_request(name, f"c{run_id}{i}")
            _, results = await asyncio.to_thread(pool.call, name, payloads, window)
            for i in asked:
                code, body = results[i] or (pb.TIMEOUT, b"")
                what = _next_request(name, code, i in timed_out)
                if code == pb.TIMEOUT:
                    timed_out.add(i)
                if what == "":
                    users[i] = client_pb2.LoginReply.FromString(body).user_id
                    del pending[i]
                elif what == "fail":
                    failed[f"{name} {pb.ErrorCode.Name(pb.ErrorCode.ValueType(code))}"] += 1
                    del pending[i]
                else:
                    pending[i] = what
        if failed:
            break
    failed.update(f"{what} TIMEOUT" for what in pending.values())
    if failed:
        raise BenchError(f"Register: {sum(failed.values())} of {clients} failed: {dict(failed)}")
    return users


def _pushes(logs: list[ChatLog], kind: str) -> list[int]:
    """Sorted send → push nanoseconds after warm-up: of 1:1 pushes ("pairs"), group pushes
    ("group") or both ("all")."""
    return sorted(
        ns
        for log in logs
        for ns in (log.latencies_ns if kind != "group" else [])
        + (log.group_latencies_ns if kind != "pairs" else [])
    )


def _latencies(logs: list[ChatLog]) -> dict[str, Any]:
    """Percentiles of a phase: every push, 1:1 and group pushes apart, the warm-up's, acks."""
    every = _pushes(logs, "all")
    cold = sorted(ns for log in logs for ns in log.warmup_latencies_ns)
    acks = sorted(ns for log in logs for ns in log.ack_latencies_ns)
    return {
        **{f"p{q}_ms": _percentile_ms(every, q) for q in (50, 95, 99)},
        **{
            kind: {"pushes": len(got), **{f"p{q}_ms": _percentile_ms(got, q) for q in (50, 95, 99)}}
            for kind, got in (("pairs", _pushes(logs, "pairs")), ("group", _pushes(logs, "group")))
        },
        "warmup_p50_ms": _percentile_ms(cold, 50),
        "warmup_p99_ms": _percentile_ms(cold, 99),
        "ack_p50_ms": _percentile_ms(acks, 50),
        "ack_p99_ms": _percentile_ms(acks, 99),
    }


def _cost(logs: list[ChatLog], node_cpu_s: float) -> dict[str, float | None]:
    """CPU µs of all nodes per message acked and per push received in a phase."""
    messages = sum(len(log.acks) for log in logs)
    pushes = sum(len(got) for log in logs for got in log.received)
    return {
        "cpu_us_per_msg": round(node_cpu_s * 1e6 / messages, 1) if messages else None,
        "cpu_us_per_push": round(node_cpu_s * 1e6 / pushes, 1) if pushes else None,
    }


def _audit(
    phases: list[tuple[list[ChatLog], list[list[tuple[str, int]]]]], groups: dict[int, list[int]]
) -> tuple[list[tuple[int, int, int]], dict[str, int]]:
    """Every acked message of the phases as (conv_id, seq, msg_id), and how its pushes went:
    each must reach the other side of its pair, or every other member of its group (`groups`:
    group id -> connections), exactly once."""
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
                field, to_id = targets[sender][turn % len(targets[sender])]
                to = (
                    [sender ^ 1]
                    if field == "to_user"
                    else [m for m in groups[to_id] if m != sender]
                )
                expected.append((msg_id, to))
                acked.append((conv_id, seq, msg_id))
    lost = sum(not received.get(r, Counter())[msg_id] for msg_id, to in expected for r in to)
    return acked, {
        "expected": sum(len(to) for _, to in expected),
        "lost": lost,
        "duplicated": sum(n - 1 for got in received.values() for n in got.values() if n > 1),
    }


def _check_store(cfg: Config, acked: list[tuple[int, int, int]], convs: set[int]) -> dict[str, int]:
    """The message tables against the acks: every acked (conv_id, seq, msg_id) stored, each
    message once, seqs contiguous from 1 in every conversation of the run."""
    rows: list[tuple[Any, ...]] = []
    with Store.from_settings(StoreSettings.from_env(cfg.extra), pool_size=1) as store:
        for conv_id in convs:
            rows += store.query(
                "message",
                conv_id,
                "SELECT conv_id, seq, msg_id, sender, client_msg_id FROM {t} WHERE conv_id = %s",
                (conv_id,),
            )
    at = {(int(r[0]), int(r[1])): int(r[2]) for r in rows}
    copies = Counter(int(r[2]) for r in rows) + Counter((r[0], r[3], r[4]) for r in rows)
    top: dict[int, int] = {}
    for conv_id, seq in at:
        top[conv_id] = max(top.get(conv_id, 0), seq)
    return {
        "rows": len(rows),
        "lost": sum(at.get((conv_id, seq)) != msg_id for conv_id, seq, msg_id in acked),
        "duplicated": sum(n - 1 for n in copies.values() if n > 1),
        "seq_gaps": sum(top.values()) - len(at),
    }


def _fabric_ceiling(keys_dir: Path) -> float:
    """Round trips/s of bench fabric's raw pyzmq echo (Curve DEALER→ROUTER, no envelope), its
    server in a process of its own, CEILING_INFLIGHT in flight for CEILING_S."""
    spawn = mp.get_context("spawn")
    ports, stop, go = spawn.Queue(), spawn.Event(), spawn.Event()
    proc = spawn.Process(
        target=bench_fabric._serve, args=(str(keys_dir), ports, stop, go), daemon=True
    )
    proc.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        try:
            _, raw_port, _ = ports.get(timeout=SETTLE_S)
        except queue.Empty:
            raise BenchError("bench fabric's echo server did not start") from None
        pair = keys.load_node(keys_dir)
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
            limit = opts["session_rate"]
            extra = {
                "gateway": {
                    "SOIM_SESSION_RATE": str(limit),
                    "SOIM_SESSION_BURST": str(SPAWN_BURST_S * limit),
                    **({"SOIM_WEB_PORT": "0"} if PLANES[opts["transport"]] == "web" else {}),
                }
            }
            nodes = [
                n
                for role, count in SPAWN.items()
                for n in cluster.start(role, count, **extra.get(role, {}))
            ]
            try:
                await cluster.wait_alive(view, nodes, SETTLE_S)
            except RuntimeError as err:
                raise BenchError(f"the throwaway cluster did not start: {err}") from None
            pids = {n.node_id: (n.role, n.pid) for n in nodes}
        else:
            alive = await view.settle(3.0)
            roles = Counter(p.role for p in alive)
            if not all(roles[r] for r in ("gateway", "router", "directory")):
                raise BenchError(
                    f"cluster {cfg.cluster} needs a gateway, a router and a "
                    f"directory alive; found {dict(roles)}"
                )
        target = Target(view, cfg, pids)
        if opts["logins"]:
            return await logins(
                target, opts["clients"], opts["sessions"], opts["duration"] or LOOKUP_S
            )
        return await chat(target, opts["clients"], opts)


def _options(args: dict[str, Any]) -> dict[str, Any]:
    """The options, checked; duration is None when not given (its default depends on the
    mode); rates is --rates, else [--rate]."""
    opts: dict[str, Any] = {}
    for name, kind, low, high in (
        ("--clients", int, 2, None),
        ("--sessions", int, 1, None),
        ("--rate", float, 1.0, None),
        ("--duration", float, 0.5, None),
        ("--warmup", float, 0.0, None),
        ("--group-size", int, 2, GROUP_MAX),
        ("--session-rate", int, 1, MAX_SESSION_RATE),
    ):
        raw = args.get(name)
        opts[name[2:].replace("-", "_")] = (
            None if raw is None else _number(name, raw, kind, low, high)
        )
    opts["session_rate"] = opts["session_rate"] or GatewayOptions.session_rate
    opts["group_size"] = opts["group_size"] or GROUP_SIZE
    pattern = args.get("--pattern") or "mixed"
    if pattern not in PATTERNS:
        raise BenchError(f"--pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
    opts["pattern"] = pattern
    opts["transport"] = args.get("--transport") or "zmq"
    if opts["transport"] not in TRANSPORTS:
        raise BenchError(
            f"--transport must be one of {', '.join(TRANSPORTS)}, got {opts['transport']!r}"
        )
    listed = args.get("--rates")
    opts["rates"] = (
        [_number("--rates", r, float, 1.0, None) for r in listed.split(",")]
        if listed
        else [opts["rate"] or DEFAULT_RATE]
    )
    return opts


def _number(name: str, raw: str, kind: type, low: float, high: float | None) -> Any:
    """`raw` as a `kind` in [low, high]; BenchError naming the option if it is not."""
    try:
        value = kind(raw.strip())
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        top = f" and at most {high}" if high is not None else ""
        raise BenchError(f"{name} must be a number of at least {low}{top}, got {raw!r}")
    return value


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


def _measure(
    env: dict[str, str], cluster: LocalCluster | None, opts: dict[str, Any]
) -> dict[str, Any]:
    cfg = Config.from_env(env, role="soimctl")
    store = StoreSettings.from_env(env)
    result = asyncio.run(_run(cfg, cluster, opts))
    result.update(
        mode="logins" if opts["logins"] else "chat",
        db=store.db.split(":", 1)[0],
        redis=bool(store.redis_url),
        cpus=os.cpu_count(),
        python=platform.python_version(),
    )
    return result
