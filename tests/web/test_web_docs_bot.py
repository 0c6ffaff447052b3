"""A bot written from docs/websocket.md alone talks to a real cluster (issue 19, item 3).

The test reads the JSON frames of docs/websocket.md (its ```json blocks) and hands them to a bot
that uses nothing but the `websockets` client and `json` — no so-im code: it registers with the
doc's Register frame, accepts a friend request with the doc's AddFriend frame, answers a
message with the doc's Send frame (its toUser, clientMsgId and body filled in), logs in again
with the doc's Login frame and resumes with the doc's Resume frame. A `ClientSession` user asks
for the friendship, sends the message and gets the answer. Every reply, error and push the
gateway sent has the same fields as the doc's example of it, so the doc shows what really
comes.
Peer sockets: the cluster's (SQLite, one gateway with a web port), the bot's WebSocket and the
user's ZeroMQ client.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from schema import client_pb2
from tests.harness import running_cluster
from tests.support import async_wait_until
from tui.session import EventKind

DOC = Path(__file__).resolve().parents[2] / "docs" / "websocket.md"


def doc_frames() -> list[dict[str, Any]]:
    """Every ```json block of the doc, parsed (each is one frame)."""
    blocks = re.findall(r"```json\n(.*?)\n```", DOC.read_text(), re.S)
    return [json.loads(block) for block in blocks]


# ---- the bot: websockets and json only, frames from the doc


async def echo_bot(url: str, frames: list[dict[str, Any]], log: list[dict[str, Any]]) -> None:
    """Register, accept one friend request, answer one message, log in again, resume; every
    frame received goes to `log`."""
    from websockets.asyncio.client import connect

    request = {f["method"]: f for f in frames if "method" in f}

    async def ask(ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
        await ws.send(json.dumps(frame))
        while True:
            answer = json.loads(await ws.recv())
            log.append(answer)
            if answer.get("id") == frame["id"]:
                return answer

    async with connect(url, subprotocols=["soim.json"]) as ws:
        me = (await ask(ws, request["Register"]))["body"]
        wrong = {**request["Login"], "body": {**request["Login"]["body"], "password": "nope"}}
        assert "error" in await ask(ws, wrong)
        answered = False
        while not answered:
            frame = json.loads(await ws.recv())
            log.append(frame)
            push = frame.get("push", {})
            if push.get("notice", {}).get("kind") == "NOTICE_FRIEND_REQUEST":
                accept = dict(request["AddFriend"])
                accept["body"] = {"userId": push["notice"]["user"]["userId"]}
                await ask(ws, accept)
            elif "message" in push and push["message"]["sender"] != me["userId"]:
                message = push["message"]
                send = dict(request["Send"])
                send["body"] = {
                    "clientMsgId": f"echo-{message['seq']}",
                    "toUser": message["sender"],
                    "body": "you said: " + message["body"],
                }
                await ask(ws, send)
                answered = True
        await ask(ws, request["Ping"])
        await ask(ws, request["Login"])
    async with connect(url, subprotocols=["soim.json"]) as ws:
        resume = dict(request["Resume"])
        resume["body"] = {**resume["body"], "token": me["token"]}
        await ask(ws, resume)


# ---- the test


def _fields(value: Any) -> Any:
    """The shape of a frame: its keys, recursively (values aside)."""
    if isinstance(value, dict):
        return {k: _fields(v) for k, v in value.items()}
    return None


def test_a_bot_from_the_docs(tmp_path: Path, cluster_name: str) -> None:
    frames = doc_frames()
    methods = {f["method"] for f in frames if "method" in f}
    assert {"Register", "Login", "AddFriend", "Send", "Ping", "Resume"} <= methods

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await cluster.start_all(web=True)
            (url,) = cluster.web_urls()
            alice = await cluster.client()
            await alice.register("alice", "alice's password")
            log: list[dict[str, Any]] = []
            bot = asyncio.ensure_future(echo_bot(url, frames, log))

            async def bot_id() -> int:
                found = await alice.search_users("echobot")
                return next((u.user_id for u in found.users if u.account == "echobot"), 0)

            echobot = await async_wait_until(bot_id, timeout=15, what="the bot registered")
            await alice.add_friend(echobot)

            async def accepted() -> bool:  # friends lists pending requests too: check state
                friends = (await alice.friends()).friends
                return any(
                    f.user_id == echobot and f.state == client_pb2.FRIEND_STATE_ACCEPTED
                    for f in friends
                )

            await async_wait_until(accepted, timeout=15, what="the bot accepted")
            await alice.send("hello bot", to_user=echobot)
            async with asyncio.timeout(30):
                while True:
                    event = await alice.events.get()
                    message = event.message
                    if event.kind is EventKind.MESSAGE and message and message.sender == echobot:
                        assert message.body == "you said: hello bot"
                        break
                await bot
            _same_fields_as_the_doc(frames, log)

    asyncio.run(main())


def _same_fields_as_the_doc(doc: list[dict[str, Any]], seen: list[dict[str, Any]]) -> None:
    """Each reply, error and push example of the doc has the fields of the real frame."""
    requests_by_id = {f["id"]: f["method"] for f in doc if "method" in f}
    real: dict[str, dict[str, Any]] = {}
    for frame in seen:
        if "error" in frame:
            real.setdefault("error", frame)
        elif "push" in frame:
            (kind,) = frame["push"]
            real.setdefault(f"push.{kind}", frame)
        else:
            real.setdefault(f"reply.{_reply_kind(frame)}", frame)
    checked = 0
    for example in doc:
        if "method" in example:
            continue
        if "error" in example:
            key = "error"
        elif "push" in example:
            (kind,) = example["push"]
            if kind == "receipt":
                continue  # which cursors it carries depends on timing
            key = f"push.{kind}"
        else:
            key = f"reply.{_reply_kind(example)}"
            assert example["id"] in requests_by_id, example
        assert key in real, (key, sorted(real))
        assert _fields(real[key]) == _fields(example), (key, real[key], example)
        checked += 1
    assert checked >= 8, checked


def _reply_kind(frame: dict[str, Any]) -> str:
    body = frame["body"]
    for field, kind in (("token", "login"), ("result", "friend"), ("msgId", "send")):
        if field in body:
            return kind
    return "ping" if "serverTimeMs" in body else "other"
