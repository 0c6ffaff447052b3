"""The WebSocket plane takes the ZeroMQ plane's hostile cases (issue 19, item 1).

One cluster for the module (SQLite, one gateway with a web port and SOIM_CLIENT_QUEUE_BYTES at its
2 MiB minimum, per-address login budgets lifted; a second, strict gateway for the pre-auth
limits):
- pre-auth limits: Login faster than a connection may is RATE_LIMITED; past
  SOIM_MAX_UNAUTH_PER_ADDR connections without a session the next is closed at once (a
  connection to the ZeroMQ plane too: the caps count both planes), and past
  SOIM_MAX_UNAUTH_TOTAL (from a second loopback address) too; a
  connection without a session is closed at SOIM_AUTH_DEADLINE_S while a logged-in one stays;
- a message over SOIM_MAX_FRAME_BYTES closes its connection with 1009, and HTTP requests its
  parser refuses (other methods, bodies, HTTP/1.0, long lines, too many headers, TLS or binary
  on the plain port) get a 4xx or a closed connection; the gateway serves on;
- 100,000 fuzzed frames (random bytes, text that is not JSON, JSON that is not a request: wrong
  types, bad or huge ids, unknown methods and keys, deep nesting, bodies that do not parse,
  methods that need a session; garbage on soim.proto) are each answered with an error frame
  (or the reply of the rare valid Ping) on a handful of connections; the gateway's RSS stays
  within 50 MB and it still serves;
- a reader that stops reading while pushes and History pages flow to it has its session ended
  (a slow reader, counted) and its connection reset; so is a connection without a session that
  floods bad frames and reads none of their error frames; the gateway's RSS stays bounded;
- a browser page of a foreign Origin gets HTTP 403.
Peer sockets: the cluster's; the test's WebSocket connections (one with a 4 KiB receive
buffer), a ZeroMQ ClientSession, HTTP GETs of the gateway's metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from fabric import envelope, timing
from schema import common_pb2 as pb
from tests.harness import Cluster
from tests.processes import NodeProcess
from tests.support import async_wait_until
from tests.web.web_cluster import ModuleCluster, WsClient

PASSWORD = "hostile web horse"
FUZZ_FRAMES = 100_000
WINDOW = 2_000
"""Fuzz frames sent on a connection before their answers are counted."""
FUZZ_CONNECTIONS = 4
"""Connections open at once (one soim.proto, four soim.json)."""
RSS_SLACK_BYTES = 50 << 20
STRICT = {
    "SOIM_MAX_UNAUTH_PER_ADDR": "4",
    "SOIM_MAX_UNAUTH_TOTAL": "6",
    "SOIM_AUTH_DEADLINE_S": "5",
}
OTHER_ADDR = ("127.0.0.2", 0)
"""A second source address on loopback."""
ERROR_CODES = frozenset(pb.ErrorCode.keys()) - {"OK"}
BIG_BODY = "\U0001f600" * 4000
LIFTED = {
    "SOIM_AUTH_PER_ADDR_PER_S": "100000",
    "SOIM_RESUME_PER_ADDR_PER_S": "100000",
    "SOIM_KDF_PER_ADDR": "1000",
}
"""Per-address login budgets of the module's cluster: the fuzz's stray logins come from the
address of every later test's users (the per-connection limit stays)."""


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleCluster]:
    tmp = tmp_path_factory.mktemp("web_hostile")
    extra = {"SOIM_CLIENT_QUEUE_BYTES": str(2 << 20), **LIFTED}
    mc = ModuleCluster(tmp, f"t{uuid.uuid4().hex[:12]}", f"sqlite:{tmp / 'data'}", 1, extra)
    yield mc
    mc.close()


def _cluster(web: ModuleCluster) -> Cluster:
    assert web.cluster is not None
    return web.cluster


def _gateway(cluster: Cluster) -> NodeProcess:
    return next(n for n in cluster.nodes if n.role == "gateway")


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _metric(cluster: Cluster, node_id: str, name: str) -> float:
    """A sample ("name{labels}") of one node's metrics; 0 when absent."""
    assert cluster.view is not None
    peer = next(p for p in cluster.view.membership.alive() if p.node_id == node_id)
    with urllib.request.urlopen(f"http://127.0.0.1:{peer.info.metrics_port}/metrics") as page:
        for line in page.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


async def _unauth_count(cluster: Cluster, node_id: str, n: int) -> None:
    """Wait until the gateway counts `n` connections without a session."""
    await async_wait_until(
        lambda: _metric(cluster, node_id, "soim_gateway_unauthenticated_connections") == n,
        what=f"{n} connections without a session",
    )


async def _still_serving(url: str) -> None:
    client = await WsClient.open(url)
    assert (await client.call("Ping", {"clientTimeMs": "1"}))["clientTimeMs"] == "1"
    await client.close()


async def _closed(ws: ClientConnection) -> bool:
    """Wait until the gateway closes `ws` (True), reading whatever comes before."""
    try:
        async with asyncio.timeout(15):
            async for _ in ws:
                pass
    except ConnectionClosed:
        pass
    return True


# ---- pre-auth limits, frame size, Origin


def test_pre_auth_limits(web: ModuleCluster) -> None:
    async def main() -> None:
        cluster = _cluster(web)
        (strict,) = cluster.start("gateway", SOIM_WEB_PORT="0", **STRICT)
        await cluster.wait_alive([strict])
        assert cluster.view is not None
        peer = next(p for p in cluster.view.membership.alive() if p.node_id == strict.node_id)
        url = peer.info.endpoints["web"]

        # a connection may try to log in at 1/s with a burst of 5: the 7th at once is refused
        guesser = await WsClient.open(url)
        codes = [
            await guesser.error("Login", {"account": "nobody", "password": "wrong password"})
            for _ in range(7)
        ]
        assert codes[:5] == ["BAD_CREDENTIALS"] * 5 and codes[-1] == "RATE_LIMITED", codes
        await guesser.close()
        await _unauth_count(cluster, strict.node_id, 0)

        # SOIM_MAX_UNAUTH_PER_ADDR=4: four connections without a session are kept, a fifth is
        # closed at once; one that logs in frees its place
        held = [await WsClient.open(url) for _ in range(4)]
        with pytest.raises((ConnectionClosed, OSError, InvalidHandshake)):
            extra = await connect(url)
            await extra.recv()
        await held[0].call("Register", {"account": "holder", "password": PASSWORD})
        fifth = await WsClient.open(url)
        assert await fifth.error("Me") == "UNAUTHENTICATED"

        # the caps count both planes together: with four WebSockets of 127.0.0.1 waiting, a
        # TCP connection to the ZeroMQ client port from there is closed at once too
        host, port = peer.info.endpoints["client"].removeprefix("tcp://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        async with asyncio.timeout(10):
            await reader.read()  # libzmq's greeting, then end of stream
        writer.close()
        per_addr_cap = 'soim_bad_frames_total{reason="closed_unauth_per_addr",socket="client"}'
        assert _metric(cluster, strict.node_id, per_addr_cap) == 1
        # the gateway hears of that connection's end from libzmq's monitor, a moment after the
        # peer sees it closed
        await _unauth_count(cluster, strict.node_id, 4)

        # SOIM_MAX_UNAUTH_TOTAL=6: another address may add two, not a third
        others = [await WsClient.open(url, local_addr=OTHER_ADDR) for _ in range(2)]
        with pytest.raises((ConnectionClosed, OSError, InvalidHandshake)):
            extra = await connect(url, local_addr=OTHER_ADDR)
            await extra.recv()
        assert await others[1].error("Me") == "UNAUTHENTICATED"
        total_cap = 'soim_bad_frames_total{reason="closed_unauth_total",socket="web"}'
        assert _metric(cluster, strict.node_id, total_cap) == 1

        # SOIM_AUTH_DEADLINE_S=5: the connections without a session are closed, the logged-in
        # one stays
        for client in [*held[1:], fifth, *others]:
            await client.closed()
        assert (await held[0].call("Me"))["account"] == "holder"
        assert (
            _metric(
                cluster,
                strict.node_id,
                'soim_bad_frames_total{reason="closed_auth_deadline",socket="web"}',
            )
            >= 6
        )
        await held[0].close()
        strict.stop()
        strict.wait(timing.SHUTDOWN_BUDGET_S + 5)
        # the module's later tests take the first live gateway's URL: not the stopped one's
        await async_wait_until(
            lambda: strict.node_id not in cluster.alive(), what="the strict gateway gone"
        )

    web.run(main())


HTTP_GARBAGE = [
    b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /gateways HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS hello
    bytes(range(256)) * 4 + b"\r\n\r\n",
]
"""Requests websockets' HTTP parser refuses: each gets a 4xx or a closed connection."""


async def _http_garbage(url: str, request: bytes) -> bytes:
    host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    async with asyncio.timeout(15):
        answer = await reader.read()  # until the gateway closes the connection
    writer.close()
    return answer


def test_oversized_frame_bad_http_and_bad_origin(web: ModuleCluster) -> None:
    async def main() -> None:
        url = _cluster(web).web_urls()[0]
        for request in HTTP_GARBAGE:
            answer = await _http_garbage(url, request)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), (request[:40], answer[:80])
        ws = await connect(url, max_size=None)
        await ws.send(json.dumps({"id": 1, "method": "Ping", "body": {"x": "a" * (1 << 20)}}))
        await _closed(ws)
        assert ws.close_code == 1009  # message too big
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, origin="http://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        await _still_serving(url)

    web.run(main())


# ---- fuzz


def _garbage(rng: random.Random, rid: int) -> str | bytes:
    """One malformed (rarely valid) frame of a soim.json connection."""
    kind = rng.randrange(16)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 300))  # binary, not JSON
    if kind == 1:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(0, 80)))
    if kind == 2:
        text = json.dumps({"id": rid, "method": "Ping", "body": {"clientTimeMs": "5"}})
        return text[: rng.randrange(len(text))]  # truncated
    if kind == 3:
        return json.dumps(rng.choice([None, 7, -1.5, "Login", [1, 2], True, [], {}]))
    if kind == 4:  # bad ids
        bad = rng.choice([None, 0, -5, 2**53, 2**64, 10**400 // 10**300, 1.5, "7", True, [1]])
        return json.dumps({"id": bad, "method": "Ping"})
    if kind == 5:  # unknown methods
        method = rng.choice(["Login2", "", "client.Login", "x" * 1000, "Push", "__init__"])
        return json.dumps({"id": rid, "method": method})
    if kind == 6:
        return json.dumps({"id": rid, "method": rng.choice([1, None, ["Ping"], {"a": 1}])})
    if kind == 7:  # wrong types in a body
        body = rng.choice(
            [
                {"clientTimeMs": "abc"},
                {"clientTimeMs": [1]},
                {"clientTimeMs": 1e30},
                {"nope": 1},
                [1, 2],
                "body",
                7,
            ]
        )
        return json.dumps({"id": rid, "method": "Ping", "body": body})
    if kind == 8:  # bodies that do not parse, for session-opening methods
        method = rng.choice(["Login", "Register", "Resume"])
        body = rng.choice(
            [{"account": 5}, {"password": ["x"]}, {"token": {"a": 1}}, {"device": None}]
        )
        return json.dumps({"id": rid, "method": method, "body": body})
    if kind == 9:  # deep nesting: in the frame, and in a body
        depth = rng.choice([50, 900, 5000, 12000])  # at most 60 KB: under the frame limit
        if rng.random() < 0.5:
            return "[" * depth + "]" * depth
        depth //= 6  # 6 bytes a level
        return (
            f'{{"id": {rid}, "method": "Ping", "body": ' + '{"a":' * depth + "1" + "}" * (depth + 1)
        )
    if kind == 10:  # methods that need a session
        method = rng.choice(["Send", "History", "Me", "Friends", "Typing", "Logout"])
        return json.dumps({"id": rid, "method": method, "body": {}})
    if kind == 11:
        return json.dumps({"id": rid, "method": "Ping", "surprise": 1})
    if kind == 12:
        return json.dumps({"id": rid, "method": "Ping", "deadlineMs": rng.choice([-1, 0, "x"])})
    if kind == 13:  # random objects
        return json.dumps(
            {str(rng.randrange(100)): rng.random() for _ in range(rng.randrange(1, 8))}
        )
    if kind == 14:  # out-of-range numbers in ids of a body
        big = rng.choice(["18446744073709551616", "-1", "1e5", "0x10"])
        return json.dumps({"id": rid, "method": "Send", "body": {"toUser": big, "body": "x"}})
    return json.dumps({"id": rid, "method": "Ping", "body": {"clientTimeMs": str(rid)}})


def _proto_garbage(rng: random.Random) -> bytes:
    """One malformed frame of a soim.proto connection."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 300))
    if kind == 1:
        return envelope.MAGIC + rng.randbytes(rng.randrange(0, 40))
    if kind == 2:
        return envelope.MAGIC + b"\x00\x05" + rng.randbytes(5)
    return envelope.request("client.Nope", rng.randrange(1, 1 << 40), 1, rng.randbytes(20))[0]


async def _fuzz(url: str, seed: int, frames: int, proto: bool) -> dict[str, int]:
    """Send `frames` fuzz frames, WINDOW at a time, each window on a new connection (all of
    them without a session: one lives less than SOIM_AUTH_DEADLINE_S); every frame is answered
    once. The answers' error code names, counted."""
    rng = random.Random(seed)
    answers: dict[str, int] = {}
    sent = 0
    while sent < frames:
        n = min(WINDOW, frames - sent)
        protocol = "soim.proto" if proto else "soim.json"
        async with connect(url, subprotocols=[protocol], max_size=None) as ws:  # type: ignore[list-item]
            for i in range(n):
                await ws.send(_proto_garbage(rng) if proto else _garbage(rng, sent + i + 1))
            for _ in range(n):
                async with asyncio.timeout(30):
                    code = _code(await ws.recv())
                answers[code] = answers.get(code, 0) + 1
        sent += n
    return answers


def _code(answer: str | bytes) -> str:
    """The error code name of a fuzz frame's answer ("OK" for the reply of a valid Ping)."""
    if isinstance(answer, bytes):
        header, _ = envelope.decode_frame(answer, 1 << 20)
        assert header.error != pb.OK
        return pb.ErrorCode.Name(header.error)
    frame = json.loads(answer)
    if "error" in frame:
        assert frame["error"]["code"] in ERROR_CODES, frame
        return frame["error"]["code"]
    assert set(frame) == {"id", "body"}, frame
    return "OK"


@pytest.mark.timeout(180)
def test_fuzzed_frames(web: ModuleCluster) -> None:
    seed = int(os.environ.get("SOIM_FUZZ_SEED", "0")) or random.randrange(1 << 30)
    print(f"SOIM_FUZZ_SEED={seed}")

    async def main() -> None:
        cluster = _cluster(web)
        url = cluster.web_urls()[0]
        pid = _gateway(cluster).pid
        await _still_serving(url)
        baseline = _rss(pid)
        proto_frames = FUZZ_FRAMES // 10
        json_frames = (FUZZ_FRAMES - proto_frames) // FUZZ_CONNECTIONS
        results = await asyncio.gather(
            _fuzz(url, seed, proto_frames, proto=True),
            *(_fuzz(url, seed + i + 1, json_frames, proto=False) for i in range(FUZZ_CONNECTIONS)),
        )
        total: dict[str, int] = {}
        for answers in results:
            for code, n in answers.items():
                total[code] = total.get(code, 0) + n
        print("answers:", total)
        assert sum(total.values()) == proto_frames + json_frames * FUZZ_CONNECTIONS
        assert sum(total.values()) >= FUZZ_FRAMES * 0.99
        for code in ("BAD_FRAME", "BAD_REQUEST", "UNKNOWN_METHOD", "UNAUTHENTICATED"):
            assert total.get(code, 0) > 1000, (code, total)
        assert _rss(pid) - baseline < RSS_SLACK_BYTES, (baseline, _rss(pid))
        await _still_serving(url)

    web.run(main(), timeout=170)


# ---- slow reader


async def _stalled_client(url: str) -> ClientConnection:
    """A soim.json WebSocket whose kernel receive buffer is 4 KiB and which reads one message
    at a time: once the test stops reading, it stops taking."""
    host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return await connect(url, sock=sock, max_queue=1, subprotocols=["soim.json"])  # type: ignore[list-item]


async def _request(ws: ClientConnection, rid: int, method: str, body: dict[str, Any]) -> None:
    await ws.send(json.dumps({"id": rid, "method": method, "body": body}))


async def _answer(ws: ClientConnection, rid: int) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("id") == rid:
                assert "error" not in frame, frame
                return frame.get("body", {})


def test_slow_reader(web: ModuleCluster) -> None:
    async def main() -> None:
        cluster = _cluster(web)
        url = cluster.web_urls()[0]
        gateway = _gateway(cluster)
        writer = await cluster.client()
        writer_id = (await writer.register("writer", PASSWORD)).user_id
        slow = await _stalled_client(url)
        await _request(slow, 1, "Register", {"account": "slowpoke", "password": PASSWORD})
        slow_id = int((await _answer(slow, 1))["userId"])
        await writer.add_friend(slow_id)
        await _request(slow, 2, "AddFriend", {"userId": writer_id})
        conv = int((await _answer(slow, 2))["convId"])
        baseline = _rss(gateway.pid)
        ended = 'soim_bad_frames_total{reason="closed_slow_reader",socket="web"}'
        before = _metric(cluster, gateway.node_id, ended)

        # from here on the slow reader reads nothing: pushes flow, and it asks for pages
        for _ in range(3):
            await asyncio.gather(*(writer.send(BIG_BODY, to_user=slow_id) for _ in range(20)))
        for rid in range(3, 203):
            await _request(slow, rid, "History", {"convId": conv, "limit": 100})

        await async_wait_until(
            lambda: _metric(cluster, gateway.node_id, ended) > before,
            timeout=20,
            what="the slow reader's session ended",
        )

        async def offline() -> bool:
            users = (await writer.online_users(everyone=True)).users
            return all(u.user_id != slow_id for u in users)

        await async_wait_until(offline, timeout=10, what="slowpoke offline")
        assert _rss(gateway.pid) - baseline < RSS_SLACK_BYTES
        await _still_serving(url)
        slow.transport.abort()

    web.run(main())


def test_a_flood_that_reads_no_answers(web: ModuleCluster) -> None:
    """Bad frames from a connection that never reads its error frames: once they pass
    SOIM_CLIENT_QUEUE_BYTES the connection is reset, session or not."""

    async def main() -> None:
        cluster = _cluster(web)
        url = cluster.web_urls()[0]
        gateway = _gateway(cluster)
        ended = 'soim_bad_frames_total{reason="closed_slow_reader",socket="web"}'
        before = _metric(cluster, gateway.node_id, ended)
        baseline = _rss(gateway.pid)
        flood = await _stalled_client(url)
        bad = json.dumps({"id": 1, "method": "x" * 60})  # answered UNKNOWN_METHOD, ~110 bytes
        with pytest.raises(ConnectionClosed):
            for _ in range(500_000):
                await flood.send(bad)
        assert _metric(cluster, gateway.node_id, ended) > before
        assert _rss(gateway.pid) - baseline < RSS_SLACK_BYTES
        await _still_serving(url)

    web.run(main())
