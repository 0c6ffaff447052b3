"""soimctl bench chat: a real cluster under client load — chat messages (delivered per second,
send→deliver latency at a fixed rate, nothing lost or duplicated) or, with --logins, logins,
resumes, presence lookups and idle sessions; each with a ceiling measured in the same run.

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
from pathlib import Path
from typing import Any

import zmq

from fabric import keys
from fabric.config import Config
from nodes.directory.context import KDF_THREADS
from schema import client_pb2
from shard_store.backend import StoreError
from shard_store.store import Store
from tools import bench_fabric
from tools.bench_clients import (
    CHAT_WORKERS,
    CLIENT_SEND_CAP_PER_S,
    WINDOW,
    BenchError,
    ChatLog,
    ClientPool,
)
from tools.bench_logins import logins
from tools.bench_target import PASSWORD, SETTLE_S, SPAWN, Target, bucket_quantile_ms, step
from tools.cluster_view import ClusterView
from tools.local_cluster import LocalCluster, throwaway

LOOKUP_S = 5.0
"""Default length of the lookup phase (--duration)."""
CHAT_S = 30.0
"""Default length of each chat phase (--duration)."""
GROUP_EVERY = 10
"""In the unthrottled phase every GROUP_EVERY-th send of a client goes to the group."""
GROUP_MAX = 1000
"""The first GROUP_MAX clients (the most a group admits) are in the group."""
CEILING_S = 3.0
CEILING_INFLIGHT = 64


# ---- measurements

# ---- the cluster, and the --logins mode

# ---- the chat mode

async def chat(target: Target, clients: int, rate: float, seconds: float,
               warmup: float) -> dict[str, Any]:
    """Friend pairs plus one group: a fixed-rate phase (1:1 sends; its first `warmup` seconds
    measured apart) for latency, an unthrottled phase (1:1 and group sends) for throughput,
    then every ack checked against the pushes and the database."""
    if clients % 2:
        raise BenchError("--clients must be even: the clients chat in friend pairs")
    if rate > clients * CLIENT_SEND_CAP_PER_S:
        raise BenchError(f"--rate {rate:g} needs more clients: one may send "
                         f"{CLIENT_SEND_CAP_PER_S:g} msgs/s under the gateway's session limit")
    run_id = uuid.uuid4().hex[:8]
    members = min(clients, GROUP_MAX)
    spread = [(ep, key) for _, ep, key in
              itertools.islice(itertools.cycle(target.gateways()), clients)]
    pool = ClientPool(CHAT_WORKERS)
    try:
        await asyncio.to_thread(pool.open, spread)
        register = [client_pb2.RegisterRequest(account=f"c{run_id}{i}", password=PASSWORD)
                    .SerializeToString() for i in range(clients)]
        _, replies = await step(pool, "Register", register,
                                 max(1, KDF_THREADS // pool.workers))
        users = [u.user_id for u in replies]
        friend = [users[i ^ 1] for i in range(clients)]
        for side in (0, 1):  # the even side asks, the odd side accepts
            _, replies = await step(pool, "AddFriend", [
                client_pb2.AddFriendRequest(user_id=friend[i]).SerializeToString()
                if i % 2 == side else None for i in range(clients)])
        convs = {r.conv_id for r in replies}
        _, [created] = await step(pool, "GroupCreate", [client_pb2.GroupCreateRequest(
            name=f"bench-{run_id}", user_limit=max(members, 2)).SerializeToString()])
        group = created.group.group_id
        await step(pool, "GroupJoin", [None] + [
            client_pb2.GroupJoinRequest(group_id=group).SerializeToString()
            for _ in range(1, members)])
        one_to_one = [[("to_user", friend[i])] for i in range(clients)]
        mixed = [one_to_one[i] * (GROUP_EVERY - 1) + [("to_group", group)] * (i < members)
                 for i in range(clients)]
        meter = target.cpu_meter(pool)
        commits_before = await asyncio.to_thread(target.commit_buckets)
        meter.start()
        timed = await asyncio.to_thread(pool.chat, one_to_one, warmup + seconds, rate,
                                        f"{run_id}t", warmup)
        timed_cores = meter.stop()
        commits_after = await asyncio.to_thread(target.commit_buckets)
        meter.start()
        flood = await asyncio.to_thread(pool.chat, mixed, seconds, 0, f"{run_id}f")
        flood_cores = meter.stop()
    finally:
        await asyncio.to_thread(pool.close)
    acked, pushes = _audit([(timed, one_to_one), (flood, mixed)], members)
    stored = await asyncio.to_thread(_check_store, target.cfg, acked, convs | {group})
    ceiling = await asyncio.to_thread(_fabric_ceiling, target.cfg.keys_dir)
    latencies = sorted(ns for log in timed for ns in log.latencies_ns)
    cold = sorted(ns for log in timed for ns in log.warmup_latencies_ns)
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
        "timed_sent_per_s": round(sum(log.sent for log in timed) / (warmup + seconds)),
        "warmup_p50_ms": _percentile_ms(cold, 50), "warmup_p99_ms": _percentile_ms(cold, 99),
        "ack_p50_ms": _percentile_ms(acks, 50), "ack_p99_ms": _percentile_ms(acks, 99),
        **{f"commit_p{q}_ms": bucket_quantile_ms(commits_before, commits_after, q / 100)
           for q in (50, 99)},
        "unthrottled_p50_ms": _percentile_ms(loaded, 50),
        "unthrottled_p99_ms": _percentile_ms(loaded, 99),
        "lost": pushes["lost"] + stored["lost"],
        "duplicated": pushes["duplicated"] + stored["duplicated"],
        "ceiling_per_s": round(ceiling),
        "acked": len(acked), "pushes": pushes, "store": stored, "send_errors": dict(errors),
        "cpu_cores": {"timed": timed_cores, "unthrottled": flood_cores},
        "clients": clients, "group_members": members, "rate": rate, "duration_s": seconds,
        "warmup_s": warmup,
        "load": f"{clients} clients in friend pairs, the first {members} also in one group, "
                f"spread over the gateways, raw client-plane DEALERs (Curve) driven from "
                f"{CHAT_WORKERS} worker process(es). Timed phase: 1:1 sends at {rate:g}/s in "
                f"all, {warmup:g} s of warm-up (warmup_p50_ms/warmup_p99_ms; the first send of "
                f"each conversation loads its access check and its seq) before the "
                f"{seconds:g} s of p50_ms … p99_ms and ack_p50_ms/ack_p99_ms. Unthrottled "
                f"phase: each client keeps {WINDOW} sends in flight (at most "
                f"{CLIENT_SEND_CAP_PER_S:g}/s, under the gateway's session limit), every "
                f"{GROUP_EVERY}th to the group; delivered = pushes received. No receipts.",
        "ceiling": f"bench fabric's raw Curve DEALER→ROUTER echo, {CEILING_INFLIGHT} in "
                   f"flight, {CEILING_S:g} s, after the chat phases",
        "commit": "commit_p50_ms/commit_p99_ms: the storage nodes' flush transactions (INSERTs "
                  "and the durable COMMIT) during the timed phase, the upper bound of the "
                  "soim_storage_commit_seconds bucket holding that quantile; every ack waits "
                  "for one",
    }


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
        return await chat(target, opts["clients"], opts["rate"], opts["duration"] or CHAT_S,
                          opts["warmup"])


def _options(args: dict[str, Any]) -> dict[str, Any]:
    """The numeric options, checked; duration is None when not given (its default depends on
    the mode)."""
    opts: dict[str, Any] = {}
    for name, kind, low in (("--clients", int, 2), ("--sessions", int, 1),
                            ("--rate", float, 1.0), ("--duration", float, 0.5),
                            ("--warmup", float, 0.0)):
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
