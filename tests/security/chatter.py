"""Legitimate users who keep chatting while a test attacks the cluster, and the proof that they
lost nothing.

Role: a test helper over a running `tests.harness.Cluster`. `Chatter` registers a few users
(fresh accounts of its own), makes each the friend of the next (a ring; two users are one pair),
optionally puts all of them in one group, and while the test attacks sends messages in the
background at a modest rate (default 20/s in all), 1:1 to the next user and, with
`group=True`, every other one to the group. Every acknowledged message is recorded.

At the end `stop_and_check` stops the senders, then waits until every member of every
conversation that was written to has, in its client's ordered view (`ClientSession.events`:
pushes, with gaps and misses filled from History/Sync by the session), exactly the stored
conversation: seqs contiguous from 1, each seq once, and every acked (seq, msg_id) there. A
member still short after a grace period is asked to `catch_up` (Sync + History) — the
fallback a real client uses after a reconnect. Any failed send (a send that never got its ack
within its deadline), any gap, duplicate or wrong message raises AssertionError with the
details. Usage:

    async with Chatter(cluster) as chat:
        ...attack...                  # the check runs on a clean exit of the block
    print(chat.summary())             # acked, pushed, max ack latency

or explicitly: `chat = await Chatter(cluster).start()`, ..., `await chat.stop_and_check()`.
Users are spread over the live gateways (user i on gateway i mod n), so an attack on one
gateway is felt by chat through it and across gateways. Peer sockets: those of the clients'
sessions (one DEALER each, to a gateway's client ROUTER).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from types import TracebackType

from fabric.methods import RpcError
from schema import client_pb2
from tests.harness import Cluster
from tests.support import async_wait_until
from tui.session import ClientSession, EventKind

PASSWORD = "chatter horse battery"
PUSH_GRACE_S = 3.0
"""How long members get to receive by push alone before they are asked to catch up."""
SEND_DEADLINE_S = 15.0
"""A legitimate send not acked within this (retries included) counts as a failure."""


@dataclass(frozen=True)
class Acked:
    """One acknowledged message: who sent it where, and what the store said."""

    sender: int
    conv_id: int
    seq: int
    msg_id: int
    body: str
    latency_s: float


@dataclass
class _User:
    client: ClientSession
    user_id: int
    pushes: int = 0
    seen: list[client_pb2.ChatMessage] = field(default_factory=list)

    def take_messages(self) -> None:
        """Move the session's ordered messages into `seen`."""
        events = self.client.events
        while not events.empty():
            event = events.get_nowait()
            if event.kind is EventKind.MESSAGE and event.message is not None:
                self.seen.append(event.message)

    def view(self, conv_id: int) -> list[tuple[int, int]]:
        """(seq, msg_id) of a conversation as this user's client saw it, in order."""
        self.take_messages()
        return [(m.seq, m.msg_id) for m in self.seen if m.conv_id == conv_id]


class Chatter:
    """`users` legitimate users sending `rate` messages per second in all; see the module doc."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        users: int = 2,
        rate: float = 20.0,
        group: bool = False,
        min_acked: int = 1,
    ) -> None:
        if users < 2:
            raise ValueError("a chat needs at least two users")
        self.cluster = cluster
        self.n_users = users
        self.rate = rate
        self.group = group
        self.min_acked = min_acked
        self.users: list[_User] = []
        self.pair_conv: dict[int, int] = {}  # user index -> conv with the next user
        self.group_id = 0
        self.acked: list[Acked] = []
        self.failed: list[str] = []
        self._stop = asyncio.Event()
        self._senders: list[asyncio.Task[None]] = []
        self._tag = uuid.uuid4().hex[:8]

    # ---- lifecycle
    async def start(self) -> Chatter:
        """Register, befriend (and group) the users; start sending in the background."""
        gateways = max(len(self.cluster.gateways()), 1)
        for i in range(self.n_users):
            client = await self.cluster.client(i % gateways, device=f"chat-{i}")
            reply = await client.register(f"chat{self._tag}{i}", PASSWORD)
            user = _User(client, reply.user_id)
            self._count_pushes(user)
            self.users.append(user)
        pairs = (
            [(0, 1)]
            if self.n_users == 2
            else [(i, (i + 1) % self.n_users) for i in range(self.n_users)]
        )
        for a, b in pairs:
            await self.users[a].client.add_friend(self.users[b].user_id)
            self.pair_conv[a] = (
                await self.users[b].client.add_friend(self.users[a].user_id)
            ).conv_id
        if self.group:
            owner = self.users[0].client
            self.group_id = (await owner.group_create(f"chat-{self._tag}")).group.group_id
            for user in self.users[1:]:
                await user.client.group_join(self.group_id)
        self._senders = [asyncio.ensure_future(self._send_loop(i)) for i in range(self.n_users)]
        return self

    async def __aenter__(self) -> Chatter:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.stop_and_check()
        else:
            await self._stop_senders(5.0)

    # ---- sending
    def _count_pushes(self, user: _User) -> None:
        inner = user.client.link.on_push

        def record(push: client_pb2.Push) -> None:
            if push.WhichOneof("item") == "message":
                user.pushes += 1
            inner(push)

        user.client.link.on_push = record

    def _target(self, i: int, n: int) -> tuple[int, int]:
        """(to_user, to_group) of user i's n-th message."""
        if self.group and n % 2:
            return 0, self.group_id
        if self.n_users == 2:
            return self.users[1 - i].user_id, 0
        return self.users[(i + 1) % self.n_users].user_id, 0

    async def _send_loop(self, i: int) -> None:
        user = self.users[i]
        interval = self.n_users / self.rate
        n = 0
        while not self._stop.is_set():
            to_user, to_group = self._target(i, n)
            body = f"{self._tag}:{i}:{n}"
            began = time.monotonic()
            try:
                ack = await user.client.send(
                    body, to_user=to_user, to_group=to_group, deadline_s=SEND_DEADLINE_S
                )
            except RpcError as err:
                self.failed.append(f"user {i} message {n}: {err}")
            else:
                self.acked.append(
                    Acked(
                        user.user_id,
                        ack.conv_id,
                        ack.seq,
                        ack.msg_id,
                        body,
                        time.monotonic() - began,
                    )
                )
            n += 1
            pause = interval - (time.monotonic() - began)
            if pause > 0:
                # pacing, not synchronisation: wakes at once when asked to stop
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), pause)

    async def _stop_senders(self, timeout: float) -> None:
        self._stop.set()
        if self._senders:
            _, pending = await asyncio.wait(self._senders, timeout=timeout)
            for task in pending:
                task.cancel()
                self.failed.append("a send was still in flight at the check's deadline")
            await asyncio.gather(*self._senders, return_exceptions=True)

    # ---- checking
    def _members(self, conv_id: int) -> list[_User]:
        if conv_id == self.group_id:
            return list(self.users)
        for a, conv in self.pair_conv.items():
            if conv == conv_id:
                b = 1 if self.n_users == 2 else (a + 1) % self.n_users
                return [self.users[a], self.users[b]]
        raise AssertionError(f"an ack names conversation {conv_id}, which is not ours")

    def _expected(self) -> dict[int, dict[int, int]]:
        """conv -> {seq: msg_id} of every acked message (and no seq acked twice)."""
        out: dict[int, dict[int, int]] = {}
        for a in self.acked:
            conv = out.setdefault(a.conv_id, {})
            if conv.get(a.seq, a.msg_id) != a.msg_id:
                raise AssertionError(f"conv {a.conv_id} seq {a.seq} acked for two messages")
            conv[a.seq] = a.msg_id
        return out

    def _complete(self, user: _User, conv_id: int, expected: dict[int, int]) -> bool:
        view = user.view(conv_id)
        return bool(view) and view[-1][0] >= max(expected)

    def _problems(self) -> list[str]:
        problems = list(self.failed)
        for conv_id, expected in self._expected().items():
            for user in self._members(conv_id):
                view = user.view(conv_id)
                seqs = [s for s, _ in view]
                if seqs != list(range(1, len(seqs) + 1)):
                    dupes = sorted({s for s in seqs if seqs.count(s) > 1})
                    missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
                    problems.append(
                        f"user {user.user_id} conv {conv_id}: seqs not contiguous "
                        f"from 1 (duplicates {dupes[:10]}, missing {missing[:10]})"
                    )
                got = dict(view)
                lost = sorted(s for s in expected if s not in got)
                wrong = sorted(s for s, m in expected.items() if s in got and got[s] != m)
                if lost or wrong:
                    problems.append(
                        f"user {user.user_id} conv {conv_id}: acked but not received "
                        f"{lost[:10]} ({len(lost)}), other message at {wrong[:10]}"
                    )
        if len(self.acked) < self.min_acked:
            problems.append(f"only {len(self.acked)} messages acked (wanted {self.min_acked})")
        return problems

    async def stop_and_check(self, timeout: float = 30.0) -> None:
        """Stop sending; wait until every member saw every acked message exactly once, in seq
        order with contiguous seqs (by push, else after a catch-up); AssertionError if not."""
        deadline = time.monotonic() + timeout
        await self._stop_senders(min(SEND_DEADLINE_S, timeout))
        expected = self._expected()
        todo = [(u, conv, exp) for conv, exp in expected.items() for u in self._members(conv)]

        def all_complete() -> bool:
            return all(self._complete(u, conv, exp) for u, conv, exp in todo)

        try:
            await async_wait_until(all_complete, timeout=min(PUSH_GRACE_S, timeout), what="pushes")
        except AssertionError:
            short = {id(u): u for u, conv, exp in todo if not self._complete(u, conv, exp)}
            for user in short.values():
                try:
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0.1)):
                        await user.client.catch_up()
                except (RpcError, TimeoutError) as err:
                    self.failed.append(f"user {user.user_id} could not catch up: {err!r}")
            with contextlib.suppress(AssertionError):  # the details come below
                await async_wait_until(
                    all_complete,
                    timeout=max(deadline - time.monotonic(), 0.1),
                    what="every acked message at its recipients",
                )
        problems = self._problems()
        if problems:
            raise AssertionError(
                "legitimate chat lost something:\n  "
                + "\n  ".join(problems[:30])
                + f"\n{self.summary()}"
            )

    def summary(self) -> dict[str, float]:
        """Figures of the chat: messages acked and failed, pushes received, ack latency."""
        latencies = sorted(a.latency_s for a in self.acked) or [0.0]
        return {
            "acked": len(self.acked),
            "failed": len(self.failed),
            "pushes": sum(u.pushes for u in self.users),
            "ack_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
            "ack_max_ms": round(latencies[-1] * 1000, 1),
        }
