"""The WebSocket plane feeds the same session layer as the ZeroMQ plane (issue 19, item 1).

One cluster for the module (SQLite; two gateways with SOIM_WEB_PORT=0, a third later with TLS):
- a WebSocket user and a `ClientSession` (ZeroMQ) user become friends, chat 1:1 and in a group
  and see each other's messages and receipts, with the JSON frames of docs/websocket.md;
- the binary subprotocol `soim.proto` carries the ZeroMQ plane's envelope frames as they are;
- a token from either plane resumes on the other, on another gateway;
- closing the WebSocket ends the session (the user goes offline);
- HTTP: the web client's files with Content-Type and CSP, no way out of the web directory,
  /gateways lists both gateways' WebSocket URLs (this one first), and the discovery record
  names the web endpoint, and so does `soimctl nodes`;
- wss with SOIM_WEB_CERT/SOIM_WEB_KEY (a self-signed certificate made with openssl).
Peer sockets: the cluster's; the test's WebSocket connections and ZeroMQ clients.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from fabric import envelope, timing
from schema import client_pb2
from schema import common_pb2 as pb
from tests.harness import Cluster
from tests.support import async_wait_until
from tests.web.web_cluster import ModuleCluster, WsClient
from tui.session import ClientSession, EventKind

PASSWORD = "web plane horse"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleCluster]:
    tmp = tmp_path_factory.mktemp("web_plane")
    mc = ModuleCluster(tmp, f"t{uuid.uuid4().hex[:12]}", f"sqlite:{tmp / 'data'}")
    yield mc
    mc.close()


def _cluster(web: ModuleCluster) -> Cluster:
    assert web.cluster is not None
    return web.cluster


def _http_get(url: str, path: str) -> tuple[int, dict[str, str], bytes]:
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    conn = http.client.HTTPConnection(host_port, timeout=10)
    conn.request("GET", path)
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, body


async def _ws_user(url: str, account: str) -> tuple[WsClient, dict[str, Any]]:
    client = await WsClient.open(url)
    reply = await client.call(
        "Register", {"account": account, "password": PASSWORD, "device": "web"}
    )
    return client, reply


async def _zmq_user(cluster: Cluster, account: str, gateway: int = 0) -> ClientSession:
    client = await cluster.client(gateway)
    await client.register(account, PASSWORD)
    return client


async def _next_message(client: ClientSession, body: str) -> client_pb2.ChatMessage:
    async with asyncio.timeout(15):
        while True:
            event = await client.events.get()
            if event.kind is EventKind.MESSAGE and event.message and event.message.body == body:
                return event.message


async def _push(ws: WsClient, what: str, match: Any = lambda item: True) -> dict[str, Any]:
    """The first push of kind `what` (message, receipt, notice, ...) for which `match` holds."""

    def found() -> dict[str, Any] | None:
        return next((p[what] for p in ws.pushes if what in p and match(p[what])), None)

    return await async_wait_until(found, timeout=15, what=f"a {what} push")


def test_chat_across_planes(web: ModuleCluster) -> None:
    async def main() -> None:
        cluster = _cluster(web)
        urls = cluster.web_urls()
        assert len(urls) == 2 and all(u.startswith("ws://127.0.0.1:") for u in urls)
        wanda, me = await _ws_user(urls[0], "wanda")
        wanda_id = int(me["userId"])  # 64-bit ids are strings in JSON
        assert me["account"] == "wanda" and me["token"]
        zed = await _zmq_user(cluster, "zed", gateway=1)
        assert zed.user is not None
        zed_id = zed.user.user_id

        # friends: a request from the ZeroMQ side, accepted from the WebSocket side
        await zed.add_friend(wanda_id)
        notice = await _push(wanda, "notice", lambda n: n["kind"] == "NOTICE_FRIEND_REQUEST")
        assert notice["user"]["account"] == "zed"
        await wanda.call("AddFriend", {"userId": str(zed_id)})

        # 1:1, WebSocket -> ZeroMQ: the message arrives, zed's delivered receipt comes back
        ack = await wanda.call(
            "Send", {"clientMsgId": "w-1", "toUser": str(zed_id), "body": "hello from the web"}
        )
        conv = int(ack["convId"])
        got = await _next_message(zed, "hello from the web")
        assert (got.sender, got.conv_id, got.seq) == (wanda_id, conv, int(ack["seq"]))
        receipt = await _push(
            wanda, "receipt", lambda r: r["userId"] == str(zed_id) and "deliveredSeq" in r
        )
        assert int(receipt["convId"]) == conv

        # 1:1, ZeroMQ -> WebSocket (numbers accepted for 64-bit ids on input too)
        sent = await zed.send("hello from zmq", to_user=wanda_id)
        pushed = await _push(wanda, "message", lambda m: m["body"] == "hello from zmq")
        assert int(pushed["sender"]) == zed_id and int(pushed["seq"]) == sent.seq
        await wanda.call("Read", {"convId": conv, "seq": sent.seq})

        async def zed_saw_read() -> bool:
            async with asyncio.timeout(15):
                while True:
                    event = await zed.events.get()
                    push = event.push
                    if (
                        push is not None
                        and push.WhichOneof("item") == "receipt"
                        and (push.receipt.user_id, push.receipt.read_seq) == (wanda_id, sent.seq)
                    ):
                        return True

        assert await zed_saw_read()

        # a group: created on the web, joined over ZeroMQ, both ways
        group = await wanda.call("GroupCreate", {"name": f"webgroup{uuid.uuid4().hex[:6]}"})
        gid = int(group["group"]["groupId"])
        await zed.group_join(gid)
        await zed.send("zmq to the group", to_group=gid)
        await _push(wanda, "message", lambda m: m["body"] == "zmq to the group")
        await wanda.call("Send", {"clientMsgId": "w-2", "toGroup": gid, "body": "web to group"})
        assert (await _next_message(zed, "web to group")).sender == wanda_id

        # field names: lowerCamelCase out, either form in
        assert (await wanda.call("Ping", {"client_time_ms": 5}))["clientTimeMs"] == "5"

        # errors are frames with the code's name
        assert await wanda.error("Send", {"toUser": "999999", "body": "x"}) == "INVALID_ARGUMENT"
        assert await wanda.error("GroupJoin", {"groupId": gid}) == "ALREADY_MEMBER"
        await wanda.close()

    web.run(main())


def test_binary_subprotocol(web: ModuleCluster) -> None:
    async def main() -> None:
        url = _cluster(web).web_urls()[1]
        async with connect(url, subprotocols=["soim.proto"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "soim.proto"
            request = client_pb2.RegisterRequest(account="bina", password=PASSWORD)
            deadline = 1  # the gateway applies its own deadline to every client request
            await ws.send(
                envelope.request("client.Register", 5, deadline, request.SerializeToString())[0]
            )
            header, payload = envelope.decode_frame(await ws.recv(), 1 << 20)
            assert (header.kind, header.request_id, header.error) == (pb.REPLY, 5, pb.OK)
            assert client_pb2.LoginReply.FromString(payload).account == "bina"
            await ws.send(envelope.request("client.Me", 6, deadline, b"")[0])
            header, payload = envelope.decode_frame(await ws.recv(), 1 << 20)
            assert client_pb2.MeReply.FromString(payload).account == "bina"
            await ws.send(b"garbage")
            header, _ = envelope.decode_frame(await ws.recv(), 1 << 20)
            assert (header.request_id, header.error) == (0, pb.BAD_FRAME)
            await ws.send('{"id": 1, "method": "Ping"}')  # text on soim.proto
            header, _ = envelope.decode_frame(await ws.recv(), 1 << 20)
            assert header.error == pb.BAD_FRAME

    web.run(main())


def test_resume_on_the_other_plane(web: ModuleCluster) -> None:
    async def main() -> None:
        cluster = _cluster(web)
        urls = cluster.web_urls()
        # WebSocket login on gateway 0 -> ZeroMQ resume on gateway 1
        ws, me = await _ws_user(urls[0], "rosa")
        other = await cluster.client(1)
        resumed = await other.resume(me["token"])
        assert resumed.account == "rosa"
        # ZeroMQ login -> WebSocket resume on the other gateway
        zmq_user = await _zmq_user(cluster, "ruben", gateway=0)
        ws2 = await WsClient.open(urls[1])
        again = await ws2.call("Resume", {"token": zmq_user.token, "device": "web"})
        assert again["account"] == "ruben" and again["token"]
        assert (await ws2.call("Me"))["account"] == "ruben"
        assert await ws2.error("Resume", {"token": "nope"}) == "TOKEN_INVALID"
        await ws.close()
        await ws2.close()

    web.run(main())


def test_session_ends_on_close(web: ModuleCluster) -> None:
    async def main() -> None:
        cluster = _cluster(web)
        ws, me = await _ws_user(cluster.web_urls()[0], "olga")
        watcher = await _zmq_user(cluster, "otto")
        olga = int(me["userId"])

        async def online() -> bool:
            reply = await watcher.online_users(everyone=True)
            return any(u.user_id == olga for u in reply.users)

        await async_wait_until(online, timeout=10, what="olga online")
        unauth = await WsClient.open(cluster.web_urls()[0])
        assert await unauth.error("Me") == "UNAUTHENTICATED"
        await unauth.close()
        await ws.close()

        async def offline() -> bool:
            return not await online()

        await async_wait_until(offline, timeout=10, what="olga offline once her socket closed")

    web.run(main())


def test_http_files_and_gateways(web: ModuleCluster) -> None:
    urls = _cluster(web).web_urls()
    status, headers, body = _http_get(urls[0], "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "connect-src 'self' ws: wss:" in headers["content-security-policy"]
    assert body.strip()
    for bad in ("/../pyproject.toml", "/%2e%2e/node.py", "/.hidden", "/web_plane.py", "/a//b"):
        assert _http_get(urls[0], bad)[0] == 404, bad
    status, headers, body = _http_get(urls[1], "/gateways?x=1")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"gateways": [urls[1], urls[0]]}
    # a page of another origin may not open a WebSocket; one of a gateway's may
    assert _upgrade_status(urls[0], "http://evil.example") == 403
    assert _upgrade_status(urls[0], urls[1].replace("ws://", "http://")[: -len("/ws")]) == 101


def _upgrade_status(url: str, origin: str) -> int:
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    conn = http.client.HTTPConnection(host_port, timeout=10)
    conn.request(
        "GET",
        "/ws",
        headers={
            "Origin": origin,
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    status = conn.getresponse().status
    conn.close()
    return status


def test_wss(web: ModuleCluster, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )

    async def main() -> None:
        cluster = _cluster(web)
        (node,) = cluster.start(
            "gateway", SOIM_WEB_PORT="0", SOIM_WEB_CERT=str(cert), SOIM_WEB_KEY=str(key)
        )
        await cluster.wait_alive([node])
        (url,) = [u for u in cluster.web_urls() if u.startswith("wss://")]
        tls = ssl.create_default_context(cafile=str(cert))
        client = await WsClient.open(url, ssl=tls)
        reply = await client.call("Ping", {"clientTimeMs": "12"})
        assert reply["clientTimeMs"] == "12"
        await client.close()
        node.stop()
        node.wait(timing.SHUTDOWN_BUDGET_S + 5)
        # the module's later tests list the live gateways' URLs: not the stopped one's
        await async_wait_until(lambda: node.node_id not in cluster.alive(), what="the gateway gone")

    web.run(main())


def test_soimctl_nodes_shows_the_web_endpoint(web: ModuleCluster) -> None:
    cluster = _cluster(web)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOIM_")}
    env.update(cluster.env)
    listed = subprocess.run(
        [sys.executable, "-m", "tools.soimctl", "nodes", "--json", "--wait", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    nodes = json.loads(listed.stdout)["nodes"]
    webs = sorted(n["endpoints"]["web"] for n in nodes if "web" in n["endpoints"])
    assert set(cluster.web_urls()) <= set(webs), webs
    table = subprocess.run(
        [sys.executable, "-m", "tools.soimctl", "nodes", "--wait", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"web={cluster.web_urls()[0]}" in table.stdout
