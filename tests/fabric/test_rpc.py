"""RPC over real DEALER/ROUTER sockets on 127.0.0.1: round trips, deadlines, error codes,
retries of idempotent calls only, and many calls in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import zmq
import zmq.asyncio

from fabric import envelope, id_range
from fabric.methods import ECHO, Method, RpcError
from fabric.rpc_client import RpcClient
from fabric.rpc_server import Call, RpcServer
from schema import cluster_pb2, fabric_pb2
from schema import common_pb2 as pb
from tests.support import async_wait_until

NOT_IDEMPOTENT_ECHO = Method("test.Echo", fabric_pb2.EchoRequest, fabric_pb2.EchoReply)


def echo(req: fabric_pb2.EchoRequest, call: Call) -> object:
    """Answers at once, after a delay, or with the error code asked for."""
    if req.fail_code:
        raise RpcError(req.fail_code, "asked to fail")
    if req.delay_ms:

        async def later() -> fabric_pb2.EchoReply:
            await asyncio.sleep(req.delay_ms / 1000)  # the handler's own work, not a test wait
            return fabric_pb2.EchoReply(data=req.data)

        return later()
    return fabric_pb2.EchoReply(data=req.data)


@asynccontextmanager
async def served(handler: Callable[..., object] = echo) -> AsyncIterator[RpcClient]:
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    server = RpcServer(router, "srv", 65536)
    server.register(ECHO, handler)
    server.register(NOT_IDEMPOTENT_ECHO, handler)
    task = asyncio.ensure_future(server.serve())
    client = RpcClient(ctx, f"tcp://127.0.0.1:{port}", node_id="cli")
    try:
        yield client
    finally:
        await client.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.close()
        router.close(0)
        ctx.term()


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_round_trip() -> None:
    async def main() -> None:
        async with served() as client:
            reply = await client.call(ECHO, fabric_pb2.EchoRequest(data=b"hello"), timeout=2)
            assert reply.data == b"hello"

    run(main())


def test_deadline_gives_timeout_not_hang() -> None:
    async def main() -> None:
        async with served() as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(RpcError) as err:
                await client.call(
                    NOT_IDEMPOTENT_ECHO, fabric_pb2.EchoRequest(delay_ms=2000), timeout=0.3
                )
            assert err.value.code == pb.TIMEOUT
            assert loop.time() - started < 1.0
            assert client.in_flight == 0

    run(main())


def test_error_codes_cross_the_wire() -> None:
    async def main() -> None:
        async with served() as client:
            for code in (pb.NOT_FRIEND, pb.GROUP_FULL, pb.FORBIDDEN):
                with pytest.raises(RpcError) as err:
                    await client.call(NOT_IDEMPOTENT_ECHO, fabric_pb2.EchoRequest(fail_code=code))
                assert err.value.code == code
                assert err.value.detail == "asked to fail"
            with pytest.raises(RpcError) as err:
                await client.call(
                    Method("no.Such", fabric_pb2.EchoRequest, fabric_pb2.EchoReply),
                    fabric_pb2.EchoRequest(),
                )
            assert err.value.code == pb.UNKNOWN_METHOD

    run(main())


def test_handler_crash_is_internal_error_not_traceback() -> None:
    def broken(req: fabric_pb2.EchoRequest, call: Call) -> fabric_pb2.EchoReply:
        raise KeyError("secret internals")

    async def main() -> None:
        async with served(broken) as client:
            with pytest.raises(RpcError) as err:
                await client.call(NOT_IDEMPOTENT_ECHO, fabric_pb2.EchoRequest())
            assert err.value.code == pb.INTERNAL
            assert "secret" not in err.value.detail

    run(main())


def test_a_future_handler_is_answered_when_it_settles() -> None:
    """A handler may return a Future that something else settles: its result, RpcError or
    crash becomes the reply; replies settled together all go out."""
    waiting: list[tuple[bytes, asyncio.Future[fabric_pb2.EchoReply]]] = []

    def deferred(req: fabric_pb2.EchoRequest, call: Call) -> object:
        future = asyncio.get_running_loop().create_future()
        waiting.append((req.data, future))
        return future

    async def main() -> None:
        async with served(deferred) as client:
            calls = [
                asyncio.ensure_future(
                    client.call(NOT_IDEMPOTENT_ECHO, fabric_pb2.EchoRequest(data=data), timeout=5)
                )
                for data in (b"ok", b"refused", b"crash", b"ok too")
            ]
            await async_wait_until(
                lambda: len(waiting) == 4, timeout=5, what="the four requests reaching the handler"
            )
            for data, future in waiting:
                if data == b"refused":
                    future.set_exception(RpcError(pb.NOT_FRIEND, "not yours"))
                elif data == b"crash":
                    future.set_exception(KeyError("secret internals"))
                else:
                    future.set_result(fabric_pb2.EchoReply(data=data))
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert [r.data for r in results if not isinstance(r, Exception)] == [b"ok", b"ok too"]
            refused, crashed = (r for r in results if isinstance(r, Exception))
            assert isinstance(refused, RpcError) and refused.code == pb.NOT_FRIEND
            assert isinstance(crashed, RpcError) and crashed.code == pb.INTERNAL
            assert "secret" not in crashed.detail

    run(main())


def test_a_future_never_settled_is_cancelled_at_the_deadline() -> None:
    """The server gives up on a handler's future once the request's deadline has passed."""
    waiting: list[asyncio.Future[fabric_pb2.EchoReply]] = []

    def never(req: fabric_pb2.EchoRequest, call: Call) -> object:
        waiting.append(asyncio.get_running_loop().create_future())
        return waiting[-1]

    async def main() -> None:
        async with served(never) as client:
            with pytest.raises(RpcError) as err:
                await client.call(NOT_IDEMPOTENT_ECHO, fabric_pb2.EchoRequest(), timeout=0.3)
            assert err.value.code == pb.TIMEOUT
            await async_wait_until(
                lambda: waiting[0].cancelled(),
                timeout=5,
                what="the server to cancel the handler's future",
            )

    run(main())


@asynccontextmanager
async def flaky_router(drop_first: int) -> AsyncIterator[tuple[RpcClient, list[int]]]:
    """A raw ROUTER that ignores the first `drop_first` requests, then echoes."""
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    seen: list[int] = []

    async def loop() -> None:
        while True:
            ident, *frames = await router.recv_multipart()
            env = envelope.decode(frames, 65536)
            seen.append(env.header.request_id)
            if len(seen) > drop_first:
                await router.send_multipart(
                    [ident, *envelope.reply(env.header.request_id, env.payload)]
                )

    task = asyncio.ensure_future(loop())
    client = RpcClient(ctx, f"tcp://127.0.0.1:{port}")
    try:
        yield client, seen
    finally:
        await client.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        router.close(0)
        ctx.term()


def test_idempotent_call_is_retried() -> None:
    async def main() -> None:
        async with flaky_router(drop_first=1) as (client, seen):
            reply = await client.call(ECHO, fabric_pb2.EchoRequest(data=b"again"), timeout=1.5)
            assert reply.data == b"again"
            assert len(seen) == 2 and seen[0] != seen[1]

    run(main())


def test_non_idempotent_call_is_not_retried() -> None:
    async def main() -> None:
        async with flaky_router(drop_first=1) as (client, seen):
            with pytest.raises(RpcError) as err:
                await client.call(NOT_IDEMPOTENT_ECHO, fabric_pb2.EchoRequest(), timeout=0.5)
            assert err.value.code == pb.TIMEOUT
            assert len(seen) == 1

    run(main())


def test_closing_the_client_ends_calls_and_their_retries() -> None:
    """A pending idempotent call fails with UNAVAILABLE when its client closes; its retry must
    not be queued on the closed socket, where no reply or expiry would ever end it."""

    async def main() -> None:
        async with flaky_router(drop_first=10**9) as (client, seen):
            loop = asyncio.get_running_loop()
            call = asyncio.ensure_future(client.call(ECHO, fabric_pb2.EchoRequest(), timeout=30))
            await async_wait_until(
                lambda: seen, timeout=5, what="the request reaching the (silent) server"
            )
            started = loop.time()
            await client.close()
            with pytest.raises(RpcError) as err:
                async with asyncio.timeout(5):
                    await call
            assert err.value.code == pb.UNAVAILABLE
            assert loop.time() - started < 1.0
            assert client.in_flight == 0

    run(main())


TURNS = 20
"""Loop turns over which callers keep calling while a client closes (close takes a few)."""


def test_close_is_idempotent_and_nothing_is_sent_after_it() -> None:
    """Calls made as the client closes, while it closes and after it closed each fail with
    UNAVAILABLE; no flush touches the closed socket (once 'Socket operation on non-socket'
    from a scheduled flush), no call restarts its reader, and a second close does nothing."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        troubles: list[dict[str, object]] = []
        loop.set_exception_handler(lambda _, context: troubles.append(context))

        async def call_after(turns: int) -> object:
            for _ in range(turns):  # yield `turns` loop turns: one caller per turn of close()
                await asyncio.sleep(0)
            try:
                return await client.call(ECHO, fabric_pb2.EchoRequest(), timeout=2)
            except RpcError as err:
                return err.code

        async with served() as client:
            await client.call(ECHO, fabric_pb2.EchoRequest(data=b"up"), timeout=2)
            callers = [asyncio.ensure_future(call_after(turns)) for turns in range(TURNS)]
            await client.close()
            outcomes = await asyncio.gather(*callers)
            assert outcomes == [pb.UNAVAILABLE] * TURNS
            await client.close()
            assert client.sock.closed and client.in_flight == 0
            await asyncio.sleep(0)  # one more loop turn: a flush still scheduled runs now
        assert troubles == []

    run(main())


def test_thousand_calls_in_flight() -> None:
    async def main() -> None:
        async with served() as client:
            calls = [
                client.call(
                    NOT_IDEMPOTENT_ECHO,
                    fabric_pb2.EchoRequest(data=str(i).encode(), delay_ms=5 if i % 2 else 0),
                    timeout=10,
                )
                for i in range(1000)
            ]
            replies = await asyncio.gather(*calls)
            assert [r.data for r in replies] == [str(i).encode() for i in range(1000)]
            assert client.in_flight == 0

    run(main())


def test_ids_past_a_signed_column_are_refused_only_where_a_request_can_hold_them() -> None:
    """check_ids reads the requests whose type holds a uint64 (here only nested, in a repeated
    message) and refuses one past ID_MAX with INVALID_ARGUMENT before the handler; a type that
    holds none is not read (id_range.may_hold_ids)."""
    deliver = Method("test.Deliver", cluster_pb2.DeliverBatch, fabric_pb2.EchoReply)
    handled: list[str] = []

    def answer(req: object, call: Call) -> fabric_pb2.EchoReply:
        handled.append(call.header.method)
        return fabric_pb2.EchoReply(data=b"ok")

    assert not id_range.may_hold_ids(fabric_pb2.EchoRequest)
    assert id_range.may_hold_ids(cluster_pb2.DeliverBatch)

    async def main() -> None:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        router.linger = 0
        port = router.bind_to_random_port("tcp://127.0.0.1")
        server = RpcServer(router, "srv", 65536, check_ids=True)
        server.register(deliver, answer)
        server.register(ECHO, answer)
        task = asyncio.ensure_future(server.serve())
        client = RpcClient(ctx, f"tcp://127.0.0.1:{port}")
        try:
            too_big = cluster_pb2.DeliverBatch(
                deliveries=[cluster_pb2.Delivery(user_ids=[1, id_range.ID_MAX + 1])]
            )
            with pytest.raises(RpcError) as err:
                await client.call(deliver, too_big, timeout=5)
            assert err.value.code == pb.INVALID_ARGUMENT
            assert "deliveries.user_ids" in err.value.detail
            fits = cluster_pb2.DeliverBatch(
                deliveries=[cluster_pb2.Delivery(user_ids=[id_range.ID_MAX])]
            )
            assert (await client.call(deliver, fits, timeout=5)).data == b"ok"
            assert (await client.call(ECHO, fabric_pb2.EchoRequest(), timeout=5)).data == b"ok"
            assert handled == ["test.Deliver", "fabric.Echo"]
        finally:
            await client.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            router.close(0)
            ctx.term()

    run(main())


def test_a_reply_that_does_not_parse_is_bad_request() -> None:
    """The client parses the reply's payload as the method's reply type; one that does not parse
    (here invalid UTF-8 in a string field) fails the call with BAD_REQUEST, not an exception of
    protobuf's."""
    misread = Method("test.Echo", fabric_pb2.EchoRequest, fabric_pb2.StatusReply)

    async def main() -> None:
        async with served() as client:
            with pytest.raises(RpcError) as err:
                await client.call(misread, fabric_pb2.EchoRequest(data=b"\xff\xfe"), timeout=5)
            assert err.value.code == pb.BAD_REQUEST
            assert err.value.detail.startswith("bad reply: bad_payload")
            reply = await client.call(misread, fabric_pb2.EchoRequest(data=b"fine"), timeout=5)
            assert reply.node_id == "fine"

    run(main())
