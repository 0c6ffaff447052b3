"""The retry policy (fabric/retry.py): pauses within their jitter bounds, decisions per error
code and per idempotency, deadlines never passed, idempotency read from the .proto options — and
no retry inside a retry: one ClientSession.send to a gateway that keeps answering UNAVAILABLE
reaches it exactly as often as the outbox's policy says, over real sockets (an RpcServer with
the client plane's catalogue, a Curve server like a gateway's)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import zmq
import zmq.asyncio
from google.protobuf.descriptor_pb2 import MethodOptions

from fabric.methods import ECHO, NODE, RpcError
from fabric.retry import CALL, ONCE, RECONNECT, RESEND, Policy, run
from fabric.rpc_client import RpcClient
from fabric.rpc_server import Call, RpcServer
from schema import client_pb2, fabric_pb2
from schema import common_pb2 as pb
from schema.contracts.client import CLIENT
from schema.contracts.directory import DIRECTORY
from schema.contracts.router import ROUTER
from schema.contracts.storage import STORAGE
from tui import outbox
from tui.session import ClientSession

IDEMPOTENT = MethodOptions.IDEMPOTENT
NO_SIDE_EFFECTS = MethodOptions.NO_SIDE_EFFECTS
ASKED_ONCE = MethodOptions.IDEMPOTENCY_UNKNOWN
POLICIES = (CALL, RESEND, RECONNECT)
NEVER = (
    pb.BAD_REQUEST,
    pb.UNKNOWN_METHOD,
    pb.TOO_LARGE,
    pb.BAD_CREDENTIALS,
    pb.FORBIDDEN,
    pb.INVALID_ARGUMENT,
    pb.NOT_FRIEND,
    pb.BODY_TOO_LONG,
    pb.ALREADY_EXISTS,
)
"""Answers, not accidents: no policy asks again after one of these."""


def test_idempotency_comes_from_the_proto_options() -> None:
    assert CLIENT["Send"].idempotency == IDEMPOTENT
    assert CLIENT["History"].idempotency == NO_SIDE_EFFECTS
    assert CLIENT["AddFriend"].idempotency == ASKED_ONCE
    assert CLIENT["Login"].idempotency == ASKED_ONCE
    assert STORAGE["StoreBatch"].idempotency == IDEMPOTENT
    assert ROUTER["Lookup"].idempotency == NO_SIDE_EFFECTS
    assert ROUTER["Deliver"].idempotency == ASKED_ONCE
    assert DIRECTORY["AddFriend"].idempotency == ASKED_ONCE
    assert DIRECTORY["VerifyTokens"].idempotency == NO_SIDE_EFFECTS
    assert ECHO.idempotency == NO_SIDE_EFFECTS and ECHO.name == "fabric.Echo"
    assert NODE["Drain"].idempotency == IDEMPOTENT


@pytest.mark.parametrize("policy", POLICIES)
def test_per_code_and_per_idempotency_decisions(policy: Policy) -> None:
    for code in (pb.UNAVAILABLE, pb.TIMEOUT, pb.RATE_LIMITED):
        assert policy.retries(code, IDEMPOTENT) and policy.retries(code, NO_SIDE_EFFECTS)
        assert not policy.retries(code, ASKED_ONCE)
        assert not ONCE.retries(code, IDEMPOTENT)
    for code in NEVER:
        assert not policy.retries(code, IDEMPOTENT)
    assert RESEND.retries(pb.UNAUTHENTICATED, IDEMPOTENT)  # resumed first, then resent
    assert not CALL.retries(pb.UNAUTHENTICATED, IDEMPOTENT)


@pytest.mark.parametrize("policy", POLICIES)
def test_pauses_grow_within_their_jitter_bounds(policy: Policy) -> None:
    for code, first in (
        (pb.UNAVAILABLE, policy.first_s),
        (pb.RATE_LIMITED, policy.rate_limited_first_s),
    ):
        for failures in range(1, 12):
            top = min(first * 2 ** (failures - 1), policy.max_s)
            low = top * (1 - policy.jitter)
            assert policy.pause(failures, code, lambda: 0.0) == pytest.approx(top)
            assert policy.pause(failures, code, lambda: 1.0) == pytest.approx(low)
            drawn = [policy.pause(failures, code) for _ in range(200)]
            assert all(low <= p <= top for p in drawn)
            assert len(set(drawn)) > 1  # jittered: a crowd does not retry in step
    assert policy.rate_limited_first_s > policy.first_s  # a bucket needs time to refill


def attempts_failing(
    code: int, log: list[float], starts: list[float] | None = None
) -> Callable[[float], object]:
    async def attempt(until: float) -> None:
        log.append(until)
        if starts is not None:
            starts.append(time.monotonic())
        raise RpcError(code, "again")

    return attempt


@pytest.mark.parametrize("timeout", [0.05, 0.3, 2.0])
def test_run_never_passes_the_deadline(timeout: float) -> None:
    async def main() -> None:
        for code in (pb.UNAVAILABLE, pb.RATE_LIMITED):
            untils: list[float] = []
            starts: list[float] = []
            deadline = time.monotonic() + timeout
            with pytest.raises(RpcError) as err:
                await run(
                    attempts_failing(code, untils, starts),
                    policy=CALL,
                    idempotency=IDEMPOTENT,
                    deadline=deadline,
                )
            assert err.value.code == code
            assert 1 <= len(untils) <= CALL.attempts
            assert all(start < deadline for start in starts)  # no attempt begins after it
            assert all(u <= deadline for u in untils)  # and none is given time past it
            assert untils == sorted(untils)

    asyncio.run(main())


def test_run_asks_as_often_as_the_policy_says_and_once_when_not_idempotent() -> None:
    async def main() -> None:
        for policy, idempotency, code, asked in (
            (CALL, IDEMPOTENT, pb.UNAVAILABLE, CALL.attempts),
            (CALL, NO_SIDE_EFFECTS, pb.TIMEOUT, CALL.attempts),
            (CALL, ASKED_ONCE, pb.UNAVAILABLE, 1),
            (CALL, IDEMPOTENT, pb.NOT_FRIEND, 1),
            (ONCE, IDEMPOTENT, pb.UNAVAILABLE, 1),
        ):
            untils: list[float] = []
            with pytest.raises(RpcError):
                await run(
                    attempts_failing(code, untils),
                    policy=policy,
                    idempotency=idempotency,
                    deadline=time.monotonic() + 10,
                )
            assert len(untils) == asked, (policy, idempotency, code)

    asyncio.run(main())


def test_each_attempt_gets_a_share_of_the_time_left() -> None:
    async def main() -> None:
        untils: list[float] = []
        started = time.monotonic()
        with pytest.raises(RpcError):
            await run(
                attempts_failing(pb.UNAVAILABLE, untils),
                policy=CALL,
                idempotency=IDEMPOTENT,
                deadline=started + 3.0,
            )
        assert untils[0] - started == pytest.approx(3.0 / CALL.attempts, abs=0.05)
        assert untils[-1] == pytest.approx(started + 3.0, abs=0.05)

    asyncio.run(main())


def test_a_success_after_failures_is_returned() -> None:
    async def main() -> None:
        answers = iter([RpcError(pb.UNAVAILABLE), RpcError(pb.RATE_LIMITED), "ok"])

        async def attempt(until: float) -> str:
            answer = next(answers)
            if isinstance(answer, RpcError):
                raise answer
            return answer

        got = await run(attempt, policy=CALL, idempotency=IDEMPOTENT, deadline=time.monotonic() + 5)
        assert got == "ok"

    asyncio.run(main())


def test_the_rpc_client_asks_once_when_its_caller_owns_the_retries() -> None:
    """Over real sockets: an idempotent call answered UNAVAILABLE reaches the server
    CALL.attempts times by default, once with ONCE (as the outbox, the link's reconnect loop
    and the gateway's Upstream ask it), and a call declaring no idempotency once."""

    async def main() -> None:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        router.linger = 0
        port = router.bind_to_random_port("tcp://127.0.0.1")
        server = RpcServer(router, "srv", 65536)
        asked: list[str] = []

        def unavailable(req: object, call: Call) -> None:
            asked.append(call.header.method)
            raise RpcError(pb.UNAVAILABLE, "not now")

        server.register(ECHO, unavailable)
        server.register(CLIENT["AddFriend"], unavailable)
        serving = asyncio.ensure_future(server.serve())
        client = RpcClient(ctx, f"tcp://127.0.0.1:{port}")
        try:
            for method, request, policy, times in (
                (ECHO, fabric_pb2.EchoRequest(), CALL, CALL.attempts),
                (ECHO, fabric_pb2.EchoRequest(), ONCE, 1),
                (CLIENT["AddFriend"], client_pb2.AddFriendRequest(), CALL, 1),
            ):
                asked.clear()
                with pytest.raises(RpcError) as err:
                    await client.call(method, request, timeout=5, retry=policy)
                assert err.value.code == pb.UNAVAILABLE
                assert asked == [method.name] * times
        finally:
            await client.close()
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            await server.close()
            router.close(0)
            ctx.term()

    asyncio.run(main())


LATER_MAX = 4
"""The outbox's "later" answers before a send fails, lowered so the test takes a second."""


def test_one_send_reaches_an_unavailable_gateway_exactly_as_often_as_the_outbox_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway that answers but cannot store (UNAVAILABLE to every Send): one
    ClientSession.send is asked LATER_MAX times in all — the outbox's attempts, each asked
    once by the RPC client (not RPC_MAX_ATTEMPTS times each) — then fails with UNAVAILABLE."""
    monkeypatch.setattr(outbox, "LATER_MAX", LATER_MAX)

    async def main() -> None:
        ctx = zmq.asyncio.Context()
        public, secret = zmq.curve_keypair()
        router = ctx.socket(zmq.ROUTER)
        router.linger = 0
        router.curve_secretkey = secret
        router.curve_server = True
        port = router.bind_to_random_port("tcp://127.0.0.1")
        server = RpcServer(router, "gw", 65536)
        sends: list[str] = []

        def login(req: client_pb2.LoginRequest, call: Call) -> client_pb2.LoginReply:
            return client_pb2.LoginReply(user_id=1, account=req.account, token="t")

        def send(req: client_pb2.SendRequest, call: Call) -> client_pb2.SendAck:
            sends.append(req.client_msg_id)
            raise RpcError(pb.UNAVAILABLE, "not stored; retry")

        server.register(CLIENT["Login"], login)
        server.register(CLIENT["Send"], send)
        server.register(CLIENT["Ping"], lambda req, call: client_pb2.PingReply())
        server.register(CLIENT["Sync"], lambda req, call: client_pb2.SyncReply())
        serving = asyncio.ensure_future(server.serve())
        session = ClientSession(f"tcp://127.0.0.1:{port}", public, ctx=ctx)
        try:
            await session.connect()
            await session.login("alice", "password1")
            with pytest.raises(RpcError) as err:
                async with asyncio.timeout(30):
                    await session.send("hello", to_user=2, client_msg_id="m1")
            assert err.value.code == pb.UNAVAILABLE
            assert sends == ["m1"] * LATER_MAX
        finally:
            await session.close(logout=False)
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            await server.close()
            router.close(0)
            ctx.term()

    asyncio.run(main())
