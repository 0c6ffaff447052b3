"""The storage node's fan-out with fake routers: each router has at most one Deliver in flight,
pushes made while it is unanswered leave together, in commit order, in the next call once it
answers (or fails), and a router that is free is called at once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from fabric.methods import RpcError
from nodes.storage.fanout import PushForwarder, Stored
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from shard_store.schema import KIND_TEXT, MessageRow
from tests.support import async_wait_until


@dataclass
class _Peer:
    node_id: str


class _Membership:
    """Two live routers."""

    def alive(self, role: str | None = None) -> list[_Peer]:
        return [_Peer("router-a"), _Peer("router-b")]


class _Router:
    """A router whose Deliver calls wait until the test answers them."""

    def __init__(self) -> None:
        self.calls: list[tuple[cluster_pb2.DeliverBatch, asyncio.Future[None]]] = []

    async def call(self, method: Any, batch: cluster_pb2.DeliverBatch, **_: Any) -> object:
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.calls.append((batch, answer))
        await answer
        return cluster_pb2.DeliverReply()


class _Peers:
    def __init__(self) -> None:
        self.routers = {"router-a": _Router(), "router-b": _Router()}

    def get(self, node_id: str) -> _Router:
        return self.routers[node_id]


def _stored(seq: int, sender: int, to_user: int) -> Stored:
    conv = min(sender, to_user) * 1000 + max(sender, to_user)
    row = MessageRow(conv, seq, seq, sender, f"c{seq}", 1, f"m{seq}", KIND_TEXT, 0, "")
    item = cluster_pb2.StoreItem(conv_id=conv, sender=sender, to_user=to_user)
    return Stored(row, item, "gw")


def _seqs(batch: cluster_pb2.DeliverBatch) -> list[int]:
    seqs = []
    for d in batch.deliveries:
        push = client_pb2.Push()
        push.ParseFromString(d.push)
        seqs.append(push.message.seq)
    return seqs


@pytest.mark.timeout(30)
def test_one_deliver_in_flight_per_router() -> None:
    async def scenario() -> None:
        peers = _Peers()
        fanout = PushForwarder(_Membership(), peers, None)  # type: ignore[arg-type]
        fanout.start()
        users = [u for u in range(1, 200) if fanout._routers().owner(u) == "router-a"][:2]
        a = peers.routers["router-a"]
        fanout.messages([_stored(1, users[0], users[1])])  # a free router: called at once
        await async_wait_until(lambda: len(a.calls) == 1, what="the first Deliver")
        assert _seqs(a.calls[0][0]) == [1]
        fanout.messages([_stored(2, users[0], users[1])])
        fanout.messages([_stored(3, users[1], users[0])])
        a.calls[0][1].set_result(None)
        await async_wait_until(lambda: len(a.calls) == 2, what="the held pushes")
        assert _seqs(a.calls[1][0]) == [2, 3]  # held while the first was unanswered: one call
        fanout.messages([_stored(4, users[0], users[1])])
        a.calls[1][1].set_exception(RpcError(pb.TIMEOUT, "slow router"))
        await async_wait_until(lambda: len(a.calls) == 3, what="the pushes held behind a failure")
        assert _seqs(a.calls[2][0]) == [4]
        a.calls[2][1].set_result(None)
        await fanout.close(5.0)

    asyncio.run(scenario())
