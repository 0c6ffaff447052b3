"""soimctl bench fabric: RPC and PUB/SUB throughput against a raw pyzmq ceiling, same run.

Role: one benchmark command. A server process (spawned here) serves fabric.Echo through
`RpcServer`, a raw DEALER→ROUTER echo with no envelope, and a `Publisher`; this process drives
each with the same number of calls in flight and 100-byte payloads, then prints JSON with
`rpc_per_s`, `pubsub_per_s`, `ceiling_per_s` and `ratio` = rpc_per_s / ceiling_per_s.
Every socket uses Curve with the cluster keys, as in a real cluster. The raw echo reads and
sends with the same batch I/O as `RpcServer` (batch_io.Reader, send_batch) and its client is a
plain blocking DEALER, so the ratio prices the envelope and the RPC layer, not an I/O loop.
The ceiling and RPC runs alternate in slices (ceiling, rpc, rpc, ceiling, ...), each slice
ending with everything in flight answered, so both see the same background load on a shared
machine; each rate is its completed round trips over its slices' total time.
Peer sockets: DEALER → server ROUTER (RPC and raw), SUB → server PUB.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from fabric import timing
from fabric.batch_io import Reader, send_batch
from fabric.config import Config
from fabric.events import Publisher, Subscriber
from fabric.keys import load_node
from fabric.methods import ECHO
from fabric.rpc_client import RpcClient
from fabric.rpc_server import Call, RpcServer
from fabric.security import Security
from schema import fabric_pb2

PAYLOAD = b"x" * 100
SLICES = 6
"""Slices per run of the ceiling and of RPC; even, for the ceiling, rpc, rpc, ceiling order."""


def _serve(keys_dir: str, ports: Any, stop: Any, publish: Any) -> None:
    asyncio.run(_server_main(Path(keys_dir), ports, stop, publish))


async def _server_main(keys_dir: Path, ports: Any, stop: Any, publish: Any) -> None:
    ctx = zmq.asyncio.Context()
    security = Security(ctx, keys_dir)
    security.start()
    rpc_sock, raw_sock, pub_sock = (ctx.socket(t) for t in (zmq.ROUTER, zmq.ROUTER, zmq.PUB))
    for sock in (rpc_sock, raw_sock, pub_sock):
        security.cluster_server(sock)
        sock.sndhwm = sock.rcvhwm = 100_000
    ports.put([s.bind_to_random_port("tcp://127.0.0.1") for s in (rpc_sock, raw_sock, pub_sock)])
    server = RpcServer(rpc_sock, "bench-server", 1 << 20)

    def echo(req: fabric_pb2.EchoRequest, call: Call) -> fabric_pb2.EchoReply:
        return fabric_pb2.EchoReply(data=req.data)

    server.register(ECHO, echo)
    raw_echo = _raw_echo(raw_sock)
    raw_echo.start()
    tasks = [
        asyncio.ensure_future(server.serve()),
        asyncio.ensure_future(_publish(Publisher(pub_sock, "bench-server"), publish)),
    ]
    while not stop.is_set():
        await asyncio.sleep(0.05)  # polling the parent's stop flag
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    raw_echo.close()
    security.stop()
    ctx.destroy(linger=0)


def _raw_echo(sock: zmq.asyncio.Socket) -> Reader:
    """The ceiling's server: a ROUTER that sends every message straight back, no envelope.

    It takes each batch and sends it back exactly as `RpcServer` takes requests and sends
    replies; an `await recv_multipart()` loop would pay pyzmq's asyncio cost per wake-up, which
    the RPC path does not, and so understate the ceiling (about half, measured).
    """
    return Reader(sock, lambda batch: send_batch(sock, batch), timing.TAKE_MAX_BATCH)


async def _publish(pub: Publisher, go: Any) -> None:
    while not go.is_set():
        await asyncio.sleep(0.01)  # waiting for the parent's go signal
    event = fabric_pb2.EchoReply(data=PAYLOAD)
    while True:
        for _ in range(500):
            pub.publish(b"bench", "fabric.EchoReply", event)
        await asyncio.sleep(0)


async def _rpc_slice(client: RpcClient, inflight: int, seconds: float) -> tuple[int, float]:
    """Echo calls with `inflight` in flight for `seconds`; (calls completed, time taken)."""
    request = fabric_pb2.EchoRequest(data=PAYLOAD)
    done = 0
    started = time.perf_counter()
    stop_at = started + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await client.call(ECHO, request, timeout=10)
            done += 1

    await asyncio.gather(*(worker() for _ in range(inflight)))
    return done, time.perf_counter() - started


def _ceiling_slice(sock: zmq.Socket, inflight: int, seconds: float) -> tuple[int, float]:
    """Raw echoes with `inflight` in flight for `seconds`; (round trips completed, time taken)."""
    started = time.perf_counter()
    stop_at = started + seconds
    for _ in range(inflight):
        sock.send(PAYLOAD)
    done = 0
    while True:
        sock.recv()
        done += 1
        if done % 256 == 0 and time.perf_counter() > stop_at:
            break
        sock.send(PAYLOAD)
    for _ in range(inflight - 1):  # the rest still in flight
        sock.recv()
        done += 1
    return done, time.perf_counter() - started


async def _pubsub_rate(
    ctx: zmq.asyncio.Context, security: Security, endpoint: str, go: Any, seconds: float
) -> float:
    key = security.node.public
    sub = Subscriber(ctx, max_bytes=1 << 20, secure=lambda s: security.cluster_client(s, key))
    got = 0
    first = last = 0.0

    def count(topic: bytes, env: object) -> None:
        nonlocal got, first, last
        last = time.perf_counter()
        if not got:
            first = last
        got += 1

    sub.on(b"bench", count)
    sub.connect(endpoint)
    sub.start()
    await asyncio.sleep(0.3)  # let the SUB handshake before the publisher starts
    go.set()
    await asyncio.sleep(seconds)  # the measuring window
    await sub.close()
    return (got - 1) / (last - first) if got > 1 and last > first else 0.0


def run(args: dict[str, Any]) -> int:
    """Run the benchmark and print its JSON."""
    cfg = Config.from_env(role="soimctl")
    load_node(cfg.keys_dir)  # a clear error before anything starts
    seconds = float(args.get("--seconds") or 3)
    inflight = int(args.get("--inflight") or 64)
    mpc = mp.get_context("spawn")
    ports, stop, go = mpc.Queue(), mpc.Event(), mpc.Event()
    proc = mpc.Process(target=_serve, args=(str(cfg.keys_dir), ports, stop, go), daemon=True)
    proc.start()
    try:
        rpc_port, raw_port, pub_port = ports.get(timeout=20)
        result = asyncio.run(_measure(cfg, rpc_port, raw_port, pub_port, go, inflight, seconds))
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    result.update(
        inflight=inflight,
        seconds=seconds,
        payload_bytes=len(PAYLOAD),
        curve=True,
        cpus=os.cpu_count(),
        python=platform.python_version(),
        pyzmq=zmq.__version__,
        libzmq=zmq.zmq_version(),
    )
    print(json.dumps(result, indent=None if args.get("--json") else 2))
    return 0


async def _measure(
    cfg: Config, rpc_port: int, raw_port: int, pub_port: int, go: Any, inflight: int, seconds: float
) -> dict[str, Any]:
    ctx = zmq.asyncio.Context()
    security = Security(ctx, cfg.keys_dir)
    server_key = security.node.public
    raw_ctx = zmq.Context()
    raw = raw_ctx.socket(zmq.DEALER)
    try:
        security.cluster_client(raw, server_key)
        raw.connect(f"tcp://127.0.0.1:{raw_port}")
        raw.send(PAYLOAD)
        raw.recv()  # connect and warm up
        client = RpcClient(
            ctx,
            f"tcp://127.0.0.1:{rpc_port}",
            max_bytes=1 << 20,
            secure=lambda s: security.cluster_client(s, server_key),
        )
        await client.call(ECHO, fabric_pb2.EchoRequest(data=PAYLOAD), timeout=5)  # likewise
        ceiling = rpc = (0, 0.0)
        for kind in ("ceiling", "rpc", "rpc", "ceiling") * (SLICES // 2):
            if kind == "ceiling":
                n, took = _ceiling_slice(raw, inflight, seconds / SLICES)
                ceiling = (ceiling[0] + n, ceiling[1] + took)
            else:
                n, took = await _rpc_slice(client, inflight, seconds / SLICES)
                rpc = (rpc[0] + n, rpc[1] + took)
        await client.close()
        pubsub = await _pubsub_rate(ctx, security, f"tcp://127.0.0.1:{pub_port}", go, seconds)
    finally:
        raw.close(0)
        raw_ctx.term()
        ctx.destroy(linger=0)
    rpc_per_s, ceiling_per_s = rpc[0] / rpc[1], ceiling[0] / ceiling[1]
    return {
        "rpc_per_s": round(rpc_per_s),
        "pubsub_per_s": round(pubsub),
        "ceiling_per_s": round(ceiling_per_s),
        "ratio": round(rpc_per_s / ceiling_per_s, 3),
    }
