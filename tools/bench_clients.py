"""The load generator of `soimctl bench chat`: client worker processes holding raw connections.

Role: `ClientPool` spreads many client connections over worker processes; each worker drives
its connections synchronously — the requests of a setup step (`Exchange`, one zmq.Poller), or
a chat phase (`ChatPlan` → `ChatLog`, one epoll set: `Readiness`) in which every connection
sends at its pace and records acks and pushes — so neither asyncio nor the client library's
timers are part of what is measured.
Every connection of a worker speaks through one `tools.bench_wire` wire: envelope frames, or the
JSON text frames of `soim.json` (--transport wsjson).
Peer sockets: in each worker, one DEALER per client connection (Curve with a fresh keypair) to a
gateway's client ROUTER, or with --transport ws|wsjson one `tools.bench_ws.WsConn` (a WebSocket)
to a gateway's web port; a multiprocessing pipe to the parent.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import multiprocessing as mp
import os
import select
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import zmq
from google.protobuf.message import Message

from fabric import timing
from fabric.security import anonymous_client
from schema import client_pb2
from schema import common_pb2 as pb
from tools.bench_wire import WIRES, EnvelopeWire, Pushed, Reply, Wire
from tools.bench_ws import PROTO, WsConn

CLIENT_WORKERS = max(2, os.cpu_count() or 2)
"""Processes the idle sessions of --logins are spread over."""
CHAT_WORKERS = 1
"""Processes the chat clients are spread over. One epoll-driven worker keeps up with the
unthrottled phase at under half a core, and each extra process on the cluster's cores adds
its own wake-ups to every message's time (docs/benchmarks.md: 2,000/s p99 ~25 ms with one
against ~45 ms with two)."""
REQUEST_TIMEOUT_S = 2 * timing.CLIENT_REQUEST_TIMEOUT_S
"""A client request not answered this long after it was sent is lost (TIMEOUT); a gateway
answers every request by its own deadline, CLIENT_REQUEST_TIMEOUT_S."""
WINDOW = 8
"""Sends each chat client keeps in flight in the unthrottled phase."""
BODY_CHARS = 100
FILLER = "so-im bench chat " * 6
QUIET_S = 2.0
"""A chat phase ends once its acks are in and no push came for this long ..."""
TAIL_MAX_S = 20.0
"""... or this long after the last send."""

M = TypeVar("M", bound=Message)
_NOBLOCK = int(zmq.NOBLOCK)
_FD = int(zmq.FD)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


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
    start_at: float  # time.monotonic() when every worker starts
    seconds: float
    rate: float  # sends/s of this worker; 0: each keeps WINDOW out
    cap: float  # with rate 0, sends/s of a connection at most
    tag: str  # makes client_msg_ids unique in the run
    warmup: float = 0.0  # the first seconds: their latencies kept apart


@dataclass
class ChatLog:
    """What one worker saw in a chat phase."""

    acks: list[tuple[int, int, int, int, int]]  # (connection, target turn, conv_id, seq, msg_id)
    received: list[list[int]]  # per connection: msg_id of every pushed message
    latencies_ns: list[int]  # send → push, of every 1:1 push after warm-up
    group_latencies_ns: list[int]  # send → push, of every group push after it
    ack_latencies_ns: list[int]  # send → ack, of every ack after warm-up
    warmup_latencies_ns: list[int]  # send → push, of the warm-up's sends
    sent: int  # acked within the phase window
    sent_group: int  # of which group messages
    delivered: int  # pushed within the phase window
    delivered_group: int  # of which group messages
    errors: dict[str, int]


def _client_worker(conn: Connection) -> None:
    """Body of a worker process: open sockets, run setup steps and chat phases as asked.

    Between commands it pings every connection each CLIENT_PING_INTERVAL_S, so idle sessions
    do not expire. It exits on "close", when the parent goes away, or on Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    gc.disable()  # a bounded run: full collections over the growing logs would stall the load
    ctx = zmq.Context()
    ctx.max_sockets = 65536
    socks: list[zmq.Socket] = []
    wire: Wire = EnvelopeWire()
    rids = itertools.count(1)
    ping = client_pb2.PingRequest().SerializeToString()
    try:
        while True:
            if not conn.poll(timing.CLIENT_PING_INTERVAL_S):
                _keepalive(socks, wire, rids)
                continue
            command, arg = conn.recv()
            if command == "open":  # `window` connections at a time, each answering a Ping
                targets, window, subprotocol = arg
                if not socks:
                    wire = WIRES[subprotocol]()
                elif wire.subprotocol != subprotocol:
                    raise ValueError("a worker's connections speak one subprotocol")
                results: list[tuple[int, bytes] | None] = []
                for at in range(0, len(targets), window):
                    fresh = [
                        _connect(ctx, endpoint, key, subprotocol)
                        for endpoint, key in targets[at : at + window]
                    ]
                    socks += fresh
                    results += _exchange(
                        fresh, wire, rids, "Ping", [ping] * len(fresh), window
                    ).results
                conn.send(Exchange(0.0, 0.0, results))
            elif command == "call":
                conn.send(_exchange(socks, wire, rids, *arg))
            elif command == "chat":
                conn.send(_chat(socks, wire, rids, arg))
            else:
                return
    except (EOFError, BrokenPipeError):
        return
    finally:
        for sock in socks:
            sock.close(0)
        ctx.term()


def _connect(ctx: zmq.Context, endpoint: str, server_key: bytes, subprotocol: str) -> zmq.Socket:
    """A client connection to a gateway: a DEALER with a fresh Curve keypair, or for a ws://
    endpoint a WebSocket of `subprotocol` that a worker drives like one."""
    if endpoint.startswith("ws://"):
        return WsConn(endpoint, WIRES[subprotocol].subprotocol)  # type: ignore[return-value]
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvhwm = sock.sndhwm = 0
    anonymous_client(sock, server_key)
    sock.connect(endpoint)
    return sock


def _keepalive(socks: Iterable[zmq.Socket], wire: Wire, rids: Iterator[int]) -> None:
    """A Ping on each connection, so its session does not expire idle; nobody waits for the
    replies (whoever reads the socket next skips them)."""
    deadline_ms = int((time.time() + REQUEST_TIMEOUT_S) * 1000)
    frame = client_pb2.PingRequest().SerializeToString()
    for sock in socks:
        with contextlib.suppress(zmq.Again):
            sock.send(wire.request("Ping", next(rids), deadline_ms, frame), zmq.NOBLOCK)


def _exchange(
    socks: list[zmq.Socket],
    wire: Wire,
    rids: Iterator[int],
    name: str,
    payloads: Sequence[bytes | None],
    window: int,
) -> Exchange:
    """Send payloads[i] (unless None) as client.<name> on socks[i], at most `window` in flight;
    wait for every reply (TIMEOUT for one not here REQUEST_TIMEOUT_S after its request)."""
    results: list[tuple[int, bytes] | None] = [
        None if p is None else (pb.TIMEOUT, b"") for p in payloads
    ]
    todo = [i for i, p in enumerate(payloads) if p is not None]
    waiting: dict[zmq.Socket, tuple[int, int, float]] = {}  # (connection, request id, sent at)
    poller = zmq.Poller()
    websockets = {s.fileno(): s for s in socks if isinstance(s, WsConn)}  # a poller names their fd
    started = last = time.monotonic()
    ping_at = started + timing.CLIENT_PING_INTERVAL_S
    while todo or waiting:
        now = time.monotonic()
        if now > ping_at:  # a long step: keep the sessions that wait for nothing alive
            _keepalive((sock for sock in socks if sock not in waiting), wire, rids)
            ping_at = now + timing.CLIENT_PING_INTERVAL_S
        for sock, (_, _, sent_at) in list(waiting.items()):
            if now - sent_at > REQUEST_TIMEOUT_S:
                poller.unregister(sock)
                del waiting[sock]
        deadline_ms = int((time.time() + REQUEST_TIMEOUT_S) * 1000)
        while todo and len(waiting) < window:
            i, rid = todo.pop(), next(rids)
            socks[i].send(wire.request(name, rid, deadline_ms, payloads[i] or b""))
            poller.register(socks[i], zmq.POLLIN)
            waiting[socks[i]] = (i, rid, now)
        buffered = [(s, 0) for s in websockets.values() if s in waiting and s.get(_EVENTS)]
        for polled, _ in buffered or poller.poll(100):
            sock = websockets[polled] if type(polled) is int else polled
            i, rid, _ = waiting[sock]
            # a WebSocket's frames read ahead of its TCP socket: the poller would not see them
            frames = sock.recv_ready() if isinstance(sock, WsConn) else [sock.recv()]
            for frame in frames:
                answer = wire.reply(frame, rid, name)
                if answer is None:
                    continue  # a push, or the reply to an earlier keepalive ping
                results[i] = answer
                poller.unregister(sock)
                del waiting[sock]
                last = time.monotonic()
                break
    return Exchange(started, last, results)


def _chat(socks: list[zmq.Socket], wire: Wire, rids: Iterator[int], plan: ChatPlan) -> ChatLog:
    """Run one chat phase on the first len(plan.targets) connections.

    Until start_at + seconds every connection sends — at the worker's share of a fixed rate, or
    as fast as it may (WINDOW in flight, at most plan.cap a second) — and all the while every
    connection reads its acks and pushes. Then it waits for the acks still out and for the
    pushes to stop (QUIET_S without one), up to TAIL_MAX_S.
    """
    n = len(plan.targets)
    log = ChatLog([], [[] for _ in range(n)], [], [], [], [], 0, 0, 0, 0, {})
    errors: Counter[str] = Counter()
    ready = Readiness(socks[:n])
    pending: dict[int, tuple[int, int, int, bool]] = {}  # request id -> (connection, turn,
    #                                                        sent ns, to a group)
    in_flight, turns, next_ok = [0] * n, [0] * n, [plan.start_at] * n
    stop_at = plan.start_at + plan.seconds
    deadline_ms = int(
        (time.time() + plan.start_at - time.monotonic() + plan.seconds + TAIL_MAX_S) * 1000
    )
    due = 0
    event, ack = wire.event, wire.ack
    warm_ns = int((plan.start_at + plan.warmup) * 1e9)  # monotonic_ns of the first counted send

    def send(i: int) -> None:
        turn = turns[i]
        field, to = plan.targets[i][turn % len(plan.targets[i])]
        rid, now_ns = next(rids), time.monotonic_ns()
        body = (f"{now_ns:016x}" + FILLER)[:BODY_CHARS]
        socks[i].send(wire.send(rid, deadline_ms, f"{plan.tag}{rid}", field, to, body))
        ready.sent(i)
        pending[rid] = (i, turn, now_ns, field == "to_group")
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
                        next_ok[i] = max(next_ok[i] + 1 / plan.cap, now - 1)
                wait_ms = 1
        elif (not pending and now - last_push > QUIET_S) or now > stop_at + TAIL_MAX_S:
            break
        else:
            wait_ms = 100
        for i in ready.wait(wait_ms):
            recv = socks[i].recv
            while True:
                try:
                    frame = recv(_NOBLOCK)
                except zmq.Again:
                    break
                at = time.monotonic()
                got = event(frame)
                if type(got) is Pushed:
                    log.received[i].append(got.msg_id)
                    sent_ns = int(got.body[:16], 16)
                    to_group = got.to_group
                    (
                        log.warmup_latencies_ns
                        if sent_ns < warm_ns
                        else log.group_latencies_ns
                        if to_group
                        else log.latencies_ns
                    ).append(time.monotonic_ns() - sent_ns)
                    if at < stop_at:
                        log.delivered += 1
                        log.delivered_group += to_group
                    last_push = at
                    continue
                if not isinstance(got, Reply):
                    if isinstance(got, str):
                        errors[got] += 1  # an unreadable frame
                    continue  # another push
                sent = pending.pop(got.rid, None)
                if sent is None:
                    continue  # a keepalive ping's reply
                in_flight[i] -= 1
                if got.error:
                    errors[got.error] += 1
                    continue
                log.acks.append((i, sent[1], *ack(got.body)))
                if sent[2] >= warm_ns:
                    log.ack_latencies_ns.append(time.monotonic_ns() - sent[2])
                if at < stop_at:
                    log.sent += 1
                    log.sent_group += sent[3]
    ready.close()
    errors["no ack"] += len(pending)
    log.errors = dict(+errors)
    return log


class Readiness:
    """Which of many sockets may have input, from one epoll set over their ZeroMQ FDs.

    A zmq.Poller looks at every socket on every call (its cost grows with the connections);
    epoll reports only the sockets whose state changed. ZeroMQ's FD is edge-triggered and a
    send may consume its edge, so a socket sent on is looked at again (`sent`), and every
    socket reported must be read until it is empty.
    """

    def __init__(self, socks: Sequence[zmq.Socket]) -> None:
        self._socks = socks
        self._epoll = select.epoll()
        self._index: dict[int, int] = {}
        for i, sock in enumerate(socks):
            fd = sock.get(_FD)
            self._epoll.register(fd, select.EPOLLIN)
            self._index[fd] = i
        self._sent: set[int] = set(range(len(socks)))  # whatever came before registering

    def sent(self, i: int) -> None:
        """Socket i was sent on: look at it on the next `wait`."""
        self._sent.add(i)

    def wait(self, timeout_ms: int) -> set[int]:
        """Sockets to read until empty: those whose FD fired within `timeout_ms` (0 if a sent
        one has input already), plus the sent ones with input queued."""
        with_input = {i for i in self._sent if self._socks[i].get(_EVENTS) & _POLLIN}
        self._sent.clear()
        fired = self._epoll.poll(0 if with_input else timeout_ms / 1000)
        return with_input.union(self._index[fd] for fd, _ in fired)

    def close(self) -> None:
        self._epoll.close()


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

    def open(
        self, targets: Sequence[tuple[str, bytes]], window: int = 0, subprotocol: str = PROTO
    ) -> None:
        """Connect one client per (endpoint, server key), `window` at a time per worker (0:
        all at once), a WebSocket one speaking `subprotocol`; BenchError unless each answers a
        Ping. A worker's connections all speak the subprotocol of its first."""
        n = len(self._pipes)
        window = window or len(targets)
        rounds = -(-len(targets) // (n * window)) + 1  # each at most REQUEST_TIMEOUT_S
        replies = self._ask(
            [("open", (list(targets[w::n]), window, subprotocol)) for w in range(n)],
            rounds * REQUEST_TIMEOUT_S,
        )
        replies_ok(
            "connect (Ping)",
            [r for reply in replies for r in reply.results],
            client_pb2.PingReply.FromString,
        )

    def call(
        self, name: str, payloads: Sequence[bytes | None], window: int
    ) -> tuple[float, list[tuple[int, bytes] | None]]:
        """payloads[i] (unless None) to connection i, at most `window` in flight per worker;
        (seconds from the first send to the last reply, result per connection)."""
        n = len(self._pipes)
        rounds = -(-len(payloads) // (n * window)) + 1  # each at most REQUEST_TIMEOUT_S
        replies = self._ask(
            [("call", (name, list(payloads[w::n]), window)) for w in range(n)],
            rounds * REQUEST_TIMEOUT_S,
        )
        results: list[tuple[int, bytes] | None] = [None] * len(payloads)
        for w, reply in enumerate(replies):
            results[w::n] = reply.results
        elapsed = max(r.finished for r in replies) - min(r.started for r in replies)
        return max(elapsed, 1e-9), results

    def chat(
        self,
        targets: list[list[tuple[str, int]]],
        seconds: float,
        rate: float,
        cap: float,
        tag: str,
        warmup: float = 0.0,
    ) -> list[ChatLog]:
        """One chat phase over connections 0..len(targets)-1, starting on every worker at once;
        `rate` is the total sends/s (0: as fast as each may, at most `cap` a second); the
        latencies of sends in the first `warmup` of the `seconds` are logged apart. One ChatLog
        per worker."""
        n = len(self._pipes)
        start_at = time.monotonic() + 0.5
        return self._ask(
            [
                (
                    "chat",
                    ChatPlan(
                        targets[w::n],
                        start_at,
                        seconds,
                        rate * len(targets[w::n]) / len(targets),
                        cap,
                        f"{tag}{w}-",
                        warmup,
                    ),
                )
                for w in range(n)
            ],
            seconds + TAIL_MAX_S,
        )

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


def replies_ok(
    what: str, results: Sequence[tuple[int, bytes] | None], parse: Callable[[bytes], M]
) -> list[M]:
    """Parsed replies of the requests asked (not the Nones), in connection order; BenchError
    naming the error codes if any of them failed."""
    bad = Counter(pb.ErrorCode.Name(r[0]) for r in results if r is not None and r[0] != pb.OK)
    if bad:
        raise BenchError(f"{what}: {sum(bad.values())} of {len(results)} failed: {dict(bad)}")
    return [parse(r[1]) for r in results if r is not None]
