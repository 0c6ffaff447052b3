"""batch_io.Reader on real sockets: nothing queued is missed, not even when the same socket sends
from another task (ZeroMQ's FD is edge-triggered), and a closed reader lets go of its FD; one
reader per socket; fabric/ and nodes/ do socket I/O only through fabric/batch_io.py."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from fabric.batch_io import Batch, Reader, send_batch
from tests.support import async_wait_until

N = 20_000


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def pair(ctx: zmq.asyncio.Context) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for sock in (router, dealer):
        sock.linger = 0
        sock.sndhwm = sock.rcvhwm = 0
    dealer.connect(f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}")
    return router, dealer


@pytest.mark.timeout(60)
@pytest.mark.parametrize("max_batch", [256, 7])
def test_echo_survives_sends_from_another_task(max_batch: int) -> None:
    """A ROUTER read by a Reader echoes N requests sent in bursts while another task keeps
    pushing to the same peer through send_batch: every echo comes back, whether a pass ends
    at an empty queue or at its budget (`max_batch`)."""

    async def main() -> None:
        ctx = zmq.asyncio.Context()
        router, dealer = pair(ctx)
        identities: set[bytes] = set()

        def echo(batch: Batch) -> None:
            identities.update(frames[0] for frames in batch)
            send_batch(router, batch)

        server = Reader(router, echo, max_batch)
        server.start()
        echoed = pushed = 0
        got_all = asyncio.Event()

        def count(batch: Batch) -> None:
            nonlocal echoed, pushed
            for (body,) in batch:
                if body == b"push":
                    pushed += 1
                else:
                    echoed += 1
            if echoed == N:
                got_all.set()

        client = Reader(dealer, count, max_batch)
        client.start()

        async def pusher() -> None:
            while not got_all.is_set():
                send_batch(router, [[i, b"push"] for i in identities])
                await asyncio.sleep(0)  # let the reader run between pushes (load, not a wait)

        push_task = asyncio.ensure_future(pusher())
        for start in range(0, N, 500):
            send_batch(dealer, [[b"req"]] * 500)
            await asyncio.sleep(0.001 if start % 2000 else 0)  # the requests' pace
        async with asyncio.timeout(30):
            await got_all.wait()
        push_task.cancel()
        await asyncio.gather(push_task, return_exceptions=True)
        assert echoed == N and pushed > 0
        server.close()
        client.close()
        router.close(0)
        dealer.close(0)
        ctx.term()

    run(main())


@pytest.mark.timeout(30)
def test_queued_before_start_and_closed_reader_lets_go() -> None:
    async def main() -> None:
        ctx = zmq.asyncio.Context()
        router, dealer = pair(ctx)
        got: list[list[bytes]] = []
        dealer.send(b"early")
        await async_wait_until(
            lambda: router.get(zmq.EVENTS) & zmq.POLLIN,
            timeout=5,
            what="the message queued before anyone reads",
        )
        reader = Reader(router, got.extend, 16)
        reader.start()
        await async_wait_until(lambda: got, timeout=5, what="the early message read")
        assert got[0][1] == b"early"
        reader.close()
        router.close(0)
        # the FD may be reused at once: a new socket on the same loop registers cleanly
        again, dealer2 = pair(ctx)
        reader2 = Reader(again, got.extend, 16)
        reader2.start()
        dealer2.send(b"later")
        await async_wait_until(
            lambda: got[-1][1] == b"later", timeout=5, what="the later message read"
        )
        reader2.close()
        for sock in (again, dealer, dealer2):
            sock.close(0)
        ctx.term()

    run(main())


ROOT = Path(__file__).resolve().parents[2]
ZMQ_KINDS = ("multipart", "string", "json", "pyobj", "serialized")
ZMQ_ONLY_IO = {
    *(f"{verb}_{kind}" for verb in ("send", "recv") for kind in ZMQ_KINDS),
    "recv_into",
}
"""pyzmq's send/receive methods whose names nothing else in the tree uses (websockets and pipes
have a `send`/`recv` too: those count only on a receiver named like a socket)."""


def _io_calls(path: Path) -> list[str]:
    calls = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, receiver = node.func.attr, ast.unparse(node.func.value)
            if "monitor" in receiver.lower():
                continue  # a socket monitor's PAIR, read by its owner only: not batch I/O
            socket_like = any(word in receiver.lower() for word in ("sock", "shadow", "plain"))
            if name in ZMQ_ONLY_IO or (name in ("send", "recv") and socket_like):
                calls.append(f"{receiver}.{name}")
    return calls


def test_sockets_are_read_and_sent_on_only_through_batch_io() -> None:
    """The edge-triggered FD rule (see fabric.batch_io) holds because fabric/ and nodes/ send
    and receive on ZeroMQ sockets only through fabric/batch_io.py, which uses pyzmq's public
    API only; a direct send elsewhere could swallow the edge a Reader waits on."""
    found = []
    for path in sorted([*ROOT.glob("fabric/**/*.py"), *ROOT.glob("nodes/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "fabric/batch_io.py":
            continue
        found += [(rel, call) for call in _io_calls(path)]
    assert found == []
    for path in ROOT.glob("*/**/*.py"):
        if path.parts[len(ROOT.parts)] in ("fabric", "nodes", "tui", "tools", "shard_store"):
            text = path.read_text()
            assert "_shadow_sock" not in text and "zmq.backend" not in text, path


def test_one_reader_per_socket() -> None:
    async def main() -> None:
        ctx = zmq.asyncio.Context()
        router, dealer = pair(ctx)
        reader = Reader(router, lambda batch: None, 16)
        reader.start()
        with pytest.raises(RuntimeError):
            Reader(router, lambda batch: None, 16).start()
        reader.close()
        router.close(0)
        dealer.close(0)
        ctx.term()

    run(main())
