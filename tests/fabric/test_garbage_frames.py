"""Garbage, truncated, oversized and unknown-type frames sent to a ROUTER (hypothesis-generated)
are answered with an error code or dropped and counted; the server keeps serving others."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from fabric import envelope
from fabric.methods import ECHO
from fabric.rpc_server import Call, RpcServer
from schema import common_pb2 as pb
from schema import fabric_pb2

MAX_BYTES = 4096


def _echo(req: fabric_pb2.EchoRequest, call: Call) -> fabric_pb2.EchoReply:
    return fabric_pb2.EchoReply(data=req.data)


class ServerThread:
    """An RpcServer on its own event loop in a thread, serving fabric.Echo."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5), "server thread did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.linger = 0
        self.port = sock.bind_to_random_port("tcp://127.0.0.1")
        server = RpcServer(sock, "garbage-test", MAX_BYTES, name="garbage_test")
        server.register(ECHO, _echo)
        self.task = self.loop.create_task(server.serve())
        self.ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self.task)
        sock.close(0)
        ctx.term()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(5)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def dealer(server: ServerThread) -> Iterator[zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = 1000
    sock.connect(f"tcp://127.0.0.1:{server.port}")
    yield sock
    sock.close(0)
    ctx.term()


def bad_frames_total() -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "soim_bad_frames":
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels["socket"] == "garbage_test":
                    total += sample.value
    return total


def good_call(sock: zmq.Socket, rid: int) -> None:
    """A well-behaved request gets its echo back (garbage replies are skipped)."""
    sock.send_multipart(
        envelope.request(
            ECHO.name, rid, 2**62, fabric_pb2.EchoRequest(data=b"ok").SerializeToString()
        )
    )
    while True:
        env = envelope.decode(sock.recv_multipart(), 1 << 20)
        if env.header.request_id == rid:
            assert env.header.error == pb.OK
            assert fabric_pb2.EchoReply.FromString(env.payload).data == b"ok"
            return


def request_frame(kind: int, rid: int, method: str, deadline: int, payload: bytes = b"") -> bytes:
    """An envelope frame whose header has these fields."""
    return envelope.frame(
        pb.Header(
            kind=kind, request_id=rid, method=method, deadline_ms=deadline
        ).SerializeToString(),
        payload,
    )


ECHO_HEADER = pb.Header(kind=1, request_id=7, method=ECHO.name, deadline_ms=2**62)

frame_lists = st.one_of(
    # raw garbage
    st.lists(st.binary(max_size=64), min_size=0, max_size=6),
    # bad header length or header
    st.binary(max_size=64).map(lambda b: [envelope.MAGIC + b]),
    # odd headers, sometimes with extra frames
    st.tuples(
        st.builds(
            request_frame,
            st.integers(0, 9),
            st.integers(0, 2**64 - 1),
            st.text(max_size=20),
            st.integers(-1, 2**62),
            st.binary(max_size=64),
        ),
        st.lists(st.binary(max_size=16), max_size=2),
    ).map(lambda t: [t[0], *t[1]]),
    # oversized
    st.binary(min_size=MAX_BYTES, max_size=MAX_BYTES + 64).map(
        lambda b: envelope.encode(ECHO_HEADER, b)
    ),
    # truncated payload
    st.binary(max_size=32).map(lambda b: envelope.encode(ECHO_HEADER, b"\x0a\x05" + b)),
    # header cut short (its length says so)
    st.tuples(st.integers(1, 20), st.binary(max_size=8)).map(
        lambda t: [envelope.frame(ECHO_HEADER.SerializeToString()[: -t[0]], t[1])]
    ),
    # header length past the end of the frame
    st.integers(1, 20).map(lambda n: [envelope.encode(ECHO_HEADER)[0][:-n]]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=frame_lists)
def test_garbage_never_stops_the_server(
    frames: list[bytes], server: ServerThread, dealer: zmq.Socket
) -> None:
    if frames:
        dealer.send_multipart(frames)
    good_call(dealer, 4242)


def test_bad_frames_are_answered_and_counted(server: ServerThread, dealer: zmq.Socket) -> None:
    before = bad_frames_total()
    dealer.send_multipart([b"garbage"])
    env = envelope.decode(dealer.recv_multipart(), 1 << 20)
    assert env.header.error == pb.BAD_FRAME
    dealer.send_multipart([request_frame(1, 9, ECHO.name, 2**62, b"x" * MAX_BYTES)])
    env = envelope.decode(dealer.recv_multipart(), 1 << 20)
    assert env.header.error == pb.TOO_LARGE
    dealer.send_multipart([request_frame(1, 11, ECHO.name, 2**62, b"\xff\xff")])
    env = envelope.decode(dealer.recv_multipart(), 1 << 20)
    assert (env.header.request_id, env.header.error) == (11, pb.BAD_REQUEST)
    dealer.send_multipart([request_frame(1, 12, "no.Such", 2**62)])
    env = envelope.decode(dealer.recv_multipart(), 1 << 20)
    assert (env.header.request_id, env.header.error) == (12, pb.UNKNOWN_METHOD)
    dealer.send_multipart([request_frame(1, 13, ECHO.name, 2**62), b"second frame"])
    env = envelope.decode(dealer.recv_multipart(), 1 << 20)
    assert env.header.error == pb.BAD_FRAME
    assert bad_frames_total() >= before + 4
    good_call(dealer, 4343)
