"""WebSocket sessions spread over the gateways after a failover too (real processes, MariaDB).

Two gateways with a WebSocket plane hold WebSocket users (`WebUser`: the `soim.json` frames of
docs/websocket.md, following the web client's session rules) and ZeroMQ users, chatting in
pairs. One gateway is killed with SIGKILL: everyone resumes on the survivor. A new gateway
starts (on new ports): within the rebalance window the survivor redirects some sessions of
both planes to it, a round's cap at a time; each WebSocket user asked to move goes to the
redirect's `web` URL (the new gateway's, not one of a list) and resumes there with its token.
A new gateway without a WebSocket plane gets ZeroMQ sessions only. Then every message sent
across the moves is stored once and reached both sides once each, in seq order, with no gap.
Peer sockets: the cluster's; the test's WebSocket connections and ZeroMQ clients.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from websockets.exceptions import ConnectionClosed

from fabric import timing
from schema import client_pb2
from tests.cluster.failover_load import PACE_S, PacedLoad, check_nothing_lost
from tests.cluster.test_failover_gateways import counts
from tests.cluster.test_storage import Key, Member, befriend, register
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until
from tests.web.test_browser import Page, endpoint, page_url
from tests.web.web_cluster import WsClient

PASSWORD = "rebalance horse"
WEB_PAIRS = 6
ZMQ_PAIRS = 4
IDLE_WEB = 24
"""WebSocket users that only stay logged in: with them a round moves as many sessions as it may
(REBALANCE_PER_ROUND), so the cap is what paces the first round."""
GRACE_S = 3
"""SOIM_REBALANCE_GRACE_S of these clusters: the new gateway receives sessions 3 s after it
started, not 10 (the rounds, their cap and the spread are what the tests prove)."""
FAST = {"SOIM_REBALANCE_GRACE_S": str(GRACE_S)}
RECONNECT_PAUSE_S = 0.2
"""A WebSocket user's pause before trying the gateways again when none answered (as the web
client's first backoff step)."""


class WebUser:
    """A WebSocket user as the web client behaves (nodes/gateway/web/session.js): after every
    (re)connect a Resume with its token and a Sync that fetches what lies above the last seq
    seen; a pushed message beyond it fetches the gap with History first; NOTICE_REDIRECT moves
    it to `redirect.web`; a lost connection makes it try the live gateways' WebSocket URLs.
    It sends to its partner one message at a time, each retried with its clientMsgId until
    acknowledged."""

    def __init__(self, cluster: Cluster, url: str, account: str) -> None:
        self.cluster = cluster
        self.url = url
        self.account = account
        self.user_id = 0
        self.token = ""
        self.ws: WsClient | None = None
        self.up = asyncio.Event()
        self.last: dict[int, int] = {}  # conv id -> last seq passed on
        self.stream: dict[int, list[tuple[int, int]]] = {}  # conv id -> (seq, msg id) passed on
        self.redirects: list[dict[str, Any]] = []
        self.acked: dict[Key, client_pb2.SendAck] = {}
        self._moves: asyncio.Queue[str] = asyncio.Queue()
        # a pushed message, or a Sync to make (done: a future to resolve after it)
        self._jobs: asyncio.Queue[dict[str, Any] | asyncio.Future[None] | None] = asyncio.Queue()
        self._tasks: list[asyncio.Future[None]] = []

    async def register(self) -> None:
        self.ws = await WsClient.open(self.url)
        reply = await self.ws.call(
            "Register", {"account": self.account, "password": PASSWORD, "device": "web"}
        )
        self.user_id, self.token = int(reply["userId"]), reply["token"]
        self.ws.on_push = self._on_push
        self.up.set()
        self._tasks = [
            asyncio.ensure_future(self._link()),
            asyncio.ensure_future(self._consume()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()

    # ---- the link
    async def call(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request until it is answered (on the next connection if the link goes down
        first): its reply body; AssertionError for an error other than a passing one."""
        while True:
            await self.up.wait()
            ws = self.ws
            assert ws is not None
            try:
                answer = await ws.frame(method, body)
            except (ConnectionError, ConnectionClosed, TimeoutError):
                await self.reconnected(ws)
                continue
            error = answer.get("error")
            if error is None:
                reply: dict[str, Any] = answer.get("body", {})
                return reply
            assert error["code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED"), (self.account, error)
            await asyncio.sleep(RECONNECT_PAUSE_S)  # a passing refusal: the client's pause

    async def reconnected(self, old: WsClient) -> None:
        """Wait until the link is up on a connection other than `old`."""
        await async_wait_until(
            lambda: self.ws is not old and self.up.is_set(),
            timeout=30,
            what=f"{self.account} connected again",
        )

    def _on_push(self, push: dict[str, Any]) -> None:
        notice = push.get("notice")
        if notice is not None and notice.get("kind") == "NOTICE_REDIRECT":
            self.redirects.append(notice.get("redirect", {}))
            self._moves.put_nowait(notice.get("redirect", {}).get("web", ""))
        if "message" in push:
            self._jobs.put_nowait(push["message"])

    async def _link(self) -> None:
        """Follow redirects; reconnect when the connection is lost."""
        while True:
            ws = self.ws
            assert ws is not None
            move = asyncio.ensure_future(self._moves.get())
            await asyncio.wait([move, ws._reader], return_when=asyncio.FIRST_COMPLETED)
            self.up.clear()
            target = move.result() if move.done() else ""
            move.cancel()
            await ws.close()
            await self._connect(target)

    async def _connect(self, target: str) -> None:
        """A new connection (to `target` if given, else to the first live gateway that
        answers, this one last), resumed with the token; then a Sync."""
        while True:
            urls = [target] if target else []
            live = self.cluster.web_urls()
            urls += [u for u in live if u != self.url] + [u for u in live if u == self.url]
            for url in urls:
                try:
                    ws = await WsClient.open(url)
                except (OSError, ConnectionClosed, TimeoutError):
                    continue
                try:
                    answer = await ws.frame("Resume", {"token": self.token, "device": "web"})
                except (ConnectionError, ConnectionClosed, TimeoutError):
                    await ws.close()
                    continue
                if "error" in answer:
                    assert answer["error"]["code"] not in ("TOKEN_INVALID", "ACCOUNT_DISABLED")
                    await ws.close()
                    continue
                self.token = answer["body"]["token"] or self.token
                ws.on_push = self._on_push
                self.ws, self.url = ws, url
                self.up.set()
                self._jobs.put_nowait(None)  # a Sync, in line with the pushes
                return
            target = ""
            await asyncio.sleep(RECONNECT_PAUSE_S)  # no gateway answered: the client's backoff

    # ---- every message once, in order
    async def _consume(self) -> None:
        """Pass on pushed messages in order, filling gaps; or Sync."""
        while True:
            job = await self._jobs.get()
            if isinstance(job, dict):
                conv, seq = int(job["convId"]), int(job["seq"])
                known = self.last.get(conv, 0)
                if seq > known + 1:
                    await self.fill(conv, seq - 1)
                if seq == self.last.get(conv, 0) + 1:
                    self._pass(conv, seq, int(job["msgId"]))
            else:
                await self.sync()
                if job is not None:
                    job.set_result(None)

    async def sync(self) -> None:
        reply = await self.call("Sync")
        for c in reply.get("conversations", []):
            await self.fill(int(c["convId"]), int(c.get("lastSeq", 0)))

    async def fill(self, conv: int, upto: int) -> None:
        """Fetch with History what lies between the last seq passed on and `upto`."""
        while self.last.get(conv, 0) < upto:
            known = self.last.get(conv, 0)
            page = await self.call(
                "History", {"convId": str(conv), "afterSeq": str(known), "limit": upto - known}
            )
            fresh = [m for m in page.get("messages", []) if int(m["seq"]) > known]
            if not fresh:
                return
            for m in fresh:
                assert int(m["seq"]) == self.last.get(conv, 0) + 1, (conv, m, self.last)
                self._pass(conv, int(m["seq"]), int(m["msgId"]))

    def _pass(self, conv: int, seq: int, msg_id: int) -> None:
        self.last[conv] = seq
        self.stream.setdefault(conv, []).append((seq, msg_id))

    async def catch_up(self) -> None:
        """What the consumer has not passed on yet, then a last Sync (after the pushes)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait(done)
        await asyncio.wait([done, *self._tasks], timeout=20, return_when=asyncio.FIRST_COMPLETED)
        for task in self._tasks:
            if task.done():
                task.result()  # its failure, if it failed
        assert done.done(), f"{self.account} did not catch up"

    # ---- sending
    async def chat(self, partner: int, stop: asyncio.Event) -> None:
        """Send to `partner` until `stop`, each message until acknowledged."""
        for i in itertools.count():
            if stop.is_set():
                return
            cmid = f"{self.user_id}-{i}"
            body = {"clientMsgId": cmid, "toUser": str(partner), "body": f"{cmid} over the web"}
            ack = json_format.ParseDict(
                await self.call("Send", body), client_pb2.SendAck(), ignore_unknown_fields=True
            )
            self.acked.setdefault((ack.conv_id, self.user_id, cmid), ack)
            await asyncio.sleep(PACE_S)  # the load's pace, not a synchronisation


@pytest.mark.timeout(150)
@pytest.mark.parametrize("web_target", [True, False], ids=["web-target", "zeromq-only-target"])
def test_sessions_of_both_planes_spread_to_a_new_gateway_after_a_failover(
    tmp_path: Path, cluster_name: str, mysql_db: str, web_target: bool
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, mysql_db, FAST) as cluster:
            nodes = await cluster.start_all(gateways=2, web=True)
            by_id = {n.node_id: n for n in nodes}
            ids = cluster.alive("gateway")  # the order of cluster.gateways() and web_urls()
            victim, survivor = by_id[ids[0]], by_id[ids[1]]
            urls = cluster.web_urls()

            # both planes on both gateways, registered in turn: the survivor's session table
            # holds its own users of both planes first, so both planes are first to move
            webs: list[WebUser] = []
            zmqs: list[Member] = []
            for i in range(max(WEB_PAIRS, ZMQ_PAIRS) * 2):
                if i < 2 * WEB_PAIRS:
                    webs.append(WebUser(cluster, urls[i % 2], f"w{i:02d}"))
                    await webs[-1].register()
                if i < 2 * ZMQ_PAIRS:
                    zmqs.append(await register(cluster, f"z{i:02d}", i % 2))
            for a, b in zip(webs[::2], webs[1::2], strict=True):
                await a.call("AddFriend", {"userId": str(b.user_id)})
                await b.call("AddFriend", {"userId": str(a.user_id)})
            for m, n in zip(zmqs[::2], zmqs[1::2], strict=True):
                await befriend(m, n)
            idle = [WebUser(cluster, urls[i % 2], f"idle{i:02d}") for i in range(IDLE_WEB)]
            for w in idle:
                await w.register()
            total = len(webs) + len(zmqs) + len(idle)

            stop = asyncio.Event()
            chats = [
                asyncio.ensure_future(w.chat(webs[i ^ 1].user_id, stop)) for i, w in enumerate(webs)
            ]
            load = PacedLoad(zmqs, [{"to_user": zmqs[i ^ 1].id} for i in range(len(zmqs))])
            running = asyncio.ensure_future(load.run())

            victim.kill()
            await async_wait_until(
                lambda: counts(cluster, [survivor.node_id]) == [total],
                timeout=20,
                what="every session on the surviving gateway",
            )
            assert all(w.url == endpoint(cluster, survivor, "web") for w in [*webs, *idle])
            # the new gateway: with a WebSocket plane, or without one (ZeroMQ only)
            # (what the rebalancers did before is left out: while the users registered, a beat
            # behind, they may have moved a few between the first two gateways)
            logged = len(survivor.log())
            [back] = cluster.start("gateway", 1, **({"SOIM_WEB_PORT": "0"} if web_target else {}))
            await cluster.wait_alive([back])
            await cluster.wait_ready([back])
            started = time.monotonic()
            pair = [survivor.node_id, back.node_id]
            samples: list[list[int]] = []

            def spread() -> bool:
                samples.append(counts(cluster, pair))
                a, b = samples[-1]
                if web_target:
                    return a + b == total and abs(a - b) <= 2 * timing.REBALANCE_SLACK
                return [a, b] == [total - len(zmqs), len(zmqs)]  # every ZeroMQ session, only

            window = GRACE_S + 20 * timing.REBALANCE_INTERVAL_S
            await async_wait_until(spread, timeout=window, what=f"sessions spread: {samples[-1:]}")
            took = time.monotonic() - started
            # it stays so: a few more rounds move nothing back and forth
            settle = time.monotonic() + 3 * timing.REBALANCE_INTERVAL_S
            await async_wait_until(lambda: time.monotonic() > settle, timeout=10, what="rounds")
            assert spread(), samples[-1]
            # no storm: each round asked at most its cap to move (the first one exactly: all
            # sessions on one gateway are far over it), a round's worth at a time
            since = survivor.log()[logged:]
            rounds = [int(n) for n in re.findall(r"asked (\d+) sessions to move", since)]
            movable = total if web_target else len(zmqs)
            assert rounds[0] == min(timing.REBALANCE_PER_ROUND, movable), rounds
            assert max(rounds) <= timing.REBALANCE_PER_ROUND, rounds
            assert sum(rounds) == samples[-1][1], (rounds, samples[-1])  # each moved once
            gains = [b2 - b1 for (_, b1), (_, b2) in itertools.pairwise(samples)]
            to_back = {
                id(w): [r for r in w.redirects if r["gatewayId"] == back.node_id]
                for w in [*webs, *idle]
            }
            moved_web = [w for w in [*webs, *idle] if to_back[id(w)]]
            back_client = endpoint(cluster, back, "client")
            moved_zmq = [m for m in zmqs if m.client.endpoint == back_client]
            print(
                f"\nspread {samples[-1]} {took:.1f} s after the new gateway was ready; rounds "
                f"{rounds}; largest gain between two beats {max(gains)}; moved "
                f"{len(moved_web)} WebSocket and {len(moved_zmq)} ZeroMQ sessions"
            )
            assert moved_zmq, "no ZeroMQ session moved"
            if web_target:
                # every WebSocket user asked to move was asked once, the redirect named the new
                # gateway's WebSocket URL (a new one: no list had it), and it resumed there
                back_web = endpoint(cluster, back, "web")
                assert back_web not in urls
                assert moved_web, "no WebSocket session moved"
                for w in moved_web:
                    assert [r.get("web") for r in to_back[id(w)]] == [back_web], w.redirects
                await async_wait_until(
                    lambda: all(w.url == back_web and w.up.is_set() for w in moved_web),
                    timeout=10,
                    what="the WebSocket users asked to move resumed on the new gateway",
                )
            else:
                # a gateway without a WebSocket plane takes no WebSocket session
                assert not moved_web, [w.redirects for w in moved_web]

            # chat goes on, on both gateways, then stops
            sent = sum(len(w.acked) for w in webs) + len(load.acked)
            await async_wait_until(
                lambda: sum(len(w.acked) for w in webs) + len(load.acked) >= sent + 2 * total,
                timeout=20,
                what="chat goes on",
            )
            stop.set()
            load.stop()
            await asyncio.gather(running, *chats)

            # nothing lost: the database holds every acked message of both planes once (one
            # acked dict for check_database), the ZeroMQ parties saw theirs in order, ...
            for w in webs:
                load.acked.update(w.acked)
            await check_nothing_lost(mysql_db, load, zmqs)
            # ... and so did every WebSocket party
            await asyncio.gather(*(w.catch_up() for w in webs))
            for a, b in zip(webs[::2], webs[1::2], strict=True):
                convs = {key[0] for key in [*a.acked, *b.acked]}
                assert len(convs) == 1
                [conv] = convs
                stored = await web_history(a, conv)
                assert [s for s, _ in stored] == list(range(1, len(stored) + 1))
                assert a.stream[conv] == stored and b.stream[conv] == stored
            await asyncio.gather(*(w.stop() for w in [*webs, *idle]))

    asyncio.run(main())


async def web_history(user: WebUser, conv: int) -> list[tuple[int, int]]:
    """The whole conversation, paged forward: (seq, msg id) of each message."""
    out: list[tuple[int, int]] = []
    while True:
        page = await user.call(
            "History", {"convId": str(conv), "afterSeq": str(out[-1][0] if out else 0)}
        )
        out += [(int(m["seq"]), int(m["msgId"])) for m in page.get("messages", [])]
        if not page.get("more"):
            return out


@pytest.mark.timeout(120)
def test_a_page_follows_a_rebalancing_redirect_to_the_gateway_it_names(
    tmp_path: Path, cluster_name: str
) -> None:
    """The web client in headless Chromium: a page that knows only its own gateway (its
    /gateways was fetched while no other ran) moves to the new gateway the redirect names."""

    async def main() -> None:
        db = f"sqlite:{tmp_path}/db"
        async with running_cluster(tmp_path, cluster_name, db, FAST) as cluster:
            [gw_a] = [n for n in await cluster.start_all(web=True) if n.role == "gateway"]
            page = Page(page_url(cluster, gw_a), tmp_path / "chromium", tmp_path / "page.driver")
            try:
                page.register("pat")  # first in the gateway's session table: first to move
                zmqs = [await register(cluster, f"zed{i}", 0) for i in range(3)]
                [gw_b] = cluster.start("gateway", SOIM_WEB_PORT="0")
                await cluster.wait_alive([gw_b])
                await cluster.wait_ready([gw_b])
                there = page_url(cluster, gw_b).removeprefix("http://").rstrip("/")
                # 4 sessions on A, none on B: share 2, so a round moves one, the page's
                page.until(
                    lambda: page.text("#status") == f"pat · connected to {there}",
                    f"the page resumed on {there}",
                    timeout=GRACE_S + 10 * timing.REBALANCE_INTERVAL_S,
                )
                ids = [gw_a.node_id, gw_b.node_id]
                await async_wait_until(
                    lambda: counts(cluster, ids) == [3, 1], timeout=10, what="3 and 1 sessions"
                )
                home = endpoint(cluster, gw_a, "client")
                assert all(m.client.endpoint == home for m in zmqs)
            finally:
                page.quit()

    asyncio.run(main())
