"""Sessions belong to their connection: a stranger reusing a logged-in client's ZMQ routing id
gets nothing, while the victim is connected and after it has gone (issue 15, item 3).

Peer sockets: DEALERs of the test (Curve clients with throwaway keys and a chosen
ZMQ_ROUTING_ID) to the gateway's client ROUTER, plus the Chatter's clients.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from fabric.methods import RpcError
from fabric.rpc_client import RpcClient
from fabric.security import anonymous_client
from schema import client_pb2
from schema import common_pb2 as pb
from schema.contracts.client import CLIENT
from tests.harness import running_cluster
from tests.security.chatter import Chatter
from tests.support import async_wait_until

ROUTING_ID = b"victim-routing-id"


def _client(ctx: zmq.asyncio.Context, endpoint: str, key: bytes, rid: bytes) -> RpcClient:
    def secure(sock: zmq.asyncio.Socket) -> None:
        sock.routing_id = rid
        anonymous_client(sock, key)

    return RpcClient(ctx, endpoint, secure=secure, name="test")


async def _code(client: RpcClient, name: str, request: object) -> int:
    try:
        await client.call(CLIENT[name], request, timeout=3)
    except RpcError as err:
        return err.code
    return pb.OK


async def _stranger_learns_nothing(stranger: RpcClient) -> None:
    assert await _code(stranger, "Me", client_pb2.MeRequest()) == pb.UNAUTHENTICATED
    assert await _code(stranger, "Friends", client_pb2.FriendsRequest()) == pb.UNAUTHENTICATED
    send = client_pb2.SendRequest(client_msg_id="m1", to_user=1, body="in your name")
    assert await _code(stranger, "Send", send) == pb.UNAUTHENTICATED


@pytest.mark.timeout(90)
def test_a_routing_id_reused_by_another_connection_gets_nothing(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await cluster.start_all()
            endpoint, key = cluster.gateways()[0]
            ctx = zmq.asyncio.Context()
            try:
                async with Chatter(cluster):
                    victim = _client(ctx, endpoint, key, ROUTING_ID)
                    await victim.call(
                        CLIENT["Register"],
                        client_pb2.RegisterRequest(
                            account="victim", password="victim horse", nickname="V"
                        ),
                        timeout=10,
                    )
                    me = await victim.call(CLIENT["Me"], client_pb2.MeRequest(), timeout=3)
                    assert me.account == "victim"

                    # while the victim is connected: libzmq ignores the duplicate, or the
                    # gateway refuses the other key; either way nothing comes back as the victim
                    stranger = _client(ctx, endpoint, key, ROUTING_ID)
                    assert await _code(stranger, "Me", client_pb2.MeRequest()) in (
                        pb.UNAUTHENTICATED,
                        pb.TIMEOUT,
                    )
                    await stranger.close()

                    # after the victim's connection is gone
                    await victim.close()
                    stranger = _client(ctx, endpoint, key, ROUTING_ID)

                    async def refused() -> bool:
                        return await _code(stranger, "Me", client_pb2.MeRequest()) != pb.TIMEOUT

                    await async_wait_until(refused, timeout=10, what="the stranger is answered")
                    await _stranger_learns_nothing(stranger)
                    await stranger.close()
            finally:
                ctx.destroy(linger=0)

    asyncio.run(main())
