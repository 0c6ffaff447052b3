"""A storage node serves StoreBatch only once it knows a directory.

A restarted storage node may hear of the gateways before any directory; what it stored then
had its group pushes lost (the members come from a directory). A real storage node started with
a router and no directory refuses StoreBatch with UNAVAILABLE, which the gateways' clients
retry; once a directory is alive the same batch is stored.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fabric.methods import RpcError
from schema import cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.storage import STORAGE
from tests.harness import running_cluster
from tests.support import async_wait_until

BATCH = cluster_pb2.StoreBatchRequest(
    gateway_id="g",
    items=[
        cluster_pb2.StoreItem(
            origin=cluster_pb2.ClientRequestRef(session_id=b"s"),
            sender=1,
            sender_account="a",
            client_msg_id="ready-1",
            conv_id=77,
            to_user=2,
            body="hi",
        )
    ],
)


@pytest.mark.timeout(60)
def test_storage_takes_no_write_before_it_knows_a_directory(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            storage = cluster.start("storage")[0]
            await cluster.wait_alive([storage, *cluster.start("router")])
            assert cluster.view is not None
            peer = cluster.view.peers.get(storage.node_id)
            with pytest.raises(RpcError) as refused:
                await peer.call(STORAGE["StoreBatch"], BATCH, timeout=5)
            assert refused.value.code == pb.UNAVAILABLE
            assert "no live directory" in str(refused.value)

            await cluster.wait_alive(cluster.start("directory"))

            async def stored() -> cluster_pb2.StoreBatchReply | None:
                try:
                    return await peer.call(STORAGE["StoreBatch"], BATCH, timeout=5)
                except RpcError as err:  # until the storage node has heard the directory
                    assert err.code == pb.UNAVAILABLE, err
                    return None

            reply = await async_wait_until(
                stored, timeout=10, interval=0.1, what="the batch stored"
            )
            assert [(r.error, r.ack.conv_id, r.ack.seq) for r in reply.results] == [(pb.OK, 77, 1)]

    asyncio.run(main())
