"""The gateway's send batcher with stand-ins for the directory and the storage nodes: a send
whose access answer is cached goes straight to its lane, one StoreBatch per lane per pass, and
never overtakes an earlier send still waiting for its access check."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from fabric.retry import Policy
from fabric.ring import Ring
from nodes.gateway.access import AccessCache
from nodes.gateway.send_batcher import SendBatcher
from nodes.gateway.sessions import Session
from nodes.gateway.upstream import Upstream
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb

CONV = 7


class FakeUpstream:
    """One storage node; the directory answers when `answer` is set; each StoreBatch's items
    are recorded (by client_msg_id) and acknowledged."""

    def __init__(self) -> None:
        self.ring = Ring(["storage-1"])
        self.answer = asyncio.Event()
        self.checks = 0
        self.batches: list[list[str]] = []

    def storage_ring(self) -> Ring:
        return self.ring

    def storage_owner(self, conv_id: int) -> str:
        return self.ring.owner(conv_id)

    async def directory(self, name: str, request: cluster_pb2.AccessRequest) -> Any:
        assert name == "CheckAccess"
        self.checks += 1
        await self.answer.wait()
        return cluster_pb2.AccessReply(
            results=[cluster_pb2.AccessResult(error=pb.OK, conv_id=CONV) for _ in request.checks]
        )

    async def storage(
        self, node_id: str, name: str, request: cluster_pb2.StoreBatchRequest, retry: Policy
    ) -> Any:
        assert (node_id, name) == ("storage-1", "StoreBatch")
        self.batches.append([item.client_msg_id for item in request.items])
        return cluster_pb2.StoreBatchReply(
            results=[
                cluster_pb2.StoreResult(
                    error=pb.OK,
                    ack=client_pb2.SendAck(client_msg_id=item.client_msg_id, conv_id=item.conv_id),
                )
                for item in request.items
            ]
        )


def _batcher() -> tuple[SendBatcher, FakeUpstream]:
    upstream = FakeUpstream()
    fake = cast(Upstream, upstream)
    return SendBatcher("gateway-1", AccessCache(fake), fake), upstream


ALICE = Session(identity=b"a", peer_key=b"", user_id=1, account="alice", nickname="", device="")


async def _passes_until(done: Callable[[], bool], passes: int = 100) -> None:
    """Let the event loop run up to `passes` passes, until `done()`."""
    for _ in range(passes):
        if done():
            return
        await asyncio.sleep(0)  # one loop pass, not a wait for time


def _send(cmid: str) -> client_pb2.SendRequest:
    return client_pb2.SendRequest(client_msg_id=cmid, to_user=2, body="hi")


def test_cached_sends_of_one_pass_go_in_one_store_batch_without_a_check() -> None:
    async def main() -> None:
        batcher, upstream = _batcher()
        upstream.answer.set()
        first = await batcher.submit(ALICE, _send("m1"))  # a miss: checked, then cached
        assert (first.conv_id, upstream.checks) == (CONV, 1)
        acks = await asyncio.gather(*(batcher.submit(ALICE, _send(f"n{i}")) for i in range(3)))
        assert [a.client_msg_id for a in acks] == ["n0", "n1", "n2"]
        assert upstream.checks == 1
        assert upstream.batches == [["m1"], ["n0", "n1", "n2"]]

    asyncio.run(main())


def test_a_cached_send_waits_behind_a_send_whose_check_is_in_flight() -> None:
    async def main() -> None:
        batcher, upstream = _batcher()
        upstream.answer.set()
        await batcher.submit(ALICE, _send("m1"))  # (alice, user 2) is cached now
        upstream.answer.clear()
        bob = Session(identity=b"b", peer_key=b"", user_id=3, account="bob", nickname="", device="")
        waiting = batcher.submit(bob, _send("b1"))  # a miss: its check is out
        await _passes_until(lambda: upstream.checks == 2)
        behind = batcher.submit(ALICE, _send("m2"))  # cached, but a check is in flight
        await _passes_until(lambda: False, passes=10)
        assert not behind.done() and upstream.batches == [["m1"]]
        upstream.answer.set()
        await asyncio.gather(waiting, behind)
        assert upstream.batches == [["m1"], ["b1", "m2"]]
        assert upstream.checks == 2  # m2's answer came from the cache, after b1's check

    asyncio.run(main())
