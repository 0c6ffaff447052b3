"""Limits before login, directory side, on a real cluster with a realistic scrypt cost: a flood
of pipelined logins from one address (127.0.0.2, several Curve connections) leaves a correct
login from another address (127.0.0.1) under a second (bounded KDF queue, per-address share);
five wrong guesses from a stranger's address lock only that (account, address) pair, never the
owner at their own address. Legitimate users chat through the flood.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fabric.methods import RpcError
from schema import client_pb2
from schema import common_pb2 as pb
from tests.harness import Cluster, running_cluster
from tests.security.chatter import Chatter
from tui.session import ClientSession

PASSWORD = "correct horse"
SCRYPT_N = str(2**15)
"""~30 MiB and tens of ms a hash: 60 queued hashes would take seconds on two cores."""
FLOOD_CONNECTIONS = 4
FLOOD_PER_CONNECTION = 15


async def _from(cluster: Cluster, source: str) -> ClientSession:
    """A client of gateway 0 whose connection comes from the loopback address `source`."""
    endpoint, key = cluster.gateways()[0]
    host_port = endpoint.removeprefix("tcp://")
    session = ClientSession(f"tcp://{source}:0;{host_port}", key, device="test")
    await session.connect()
    cluster.clients.append(session)
    return session


async def _flood(client: ClientSession, n: int) -> list[int]:
    """`n` pipelined logins of unknown accounts (each costs the directory a hash); codes."""

    async def one(i: int) -> int:
        try:
            await client.call(
                "Login",
                client_pb2.LoginRequest(account=f"nobody{i:03d}", password="wrong password"),
                timeout=15,
            )
        except RpcError as err:
            return err.code
        return pb.OK

    return list(await asyncio.gather(*(one(i) for i in range(n))))


@pytest.mark.timeout(90)
def test_flood_from_one_address_and_strangers_guesses(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            nodes = (
                cluster.start("directory", SOIM_SCRYPT_N=SCRYPT_N)
                + cluster.start("router")
                + cluster.start("storage")
                + cluster.start("gateway")
            )
            await cluster.wait_alive(nodes)
            await (await _from(cluster, "127.0.0.1")).register("owner", PASSWORD)

            async with Chatter(cluster):
                flooders = [await _from(cluster, "127.0.0.2") for _ in range(FLOOD_CONNECTIONS)]
                flood = asyncio.gather(*(_flood(c, FLOOD_PER_CONNECTION) for c in flooders))
                owner = await _from(cluster, "127.0.0.1")  # (the flood's requests leave now)
                started = time.monotonic()
                await owner.login("owner", PASSWORD)
                took = time.monotonic() - started
                codes = [c for batch in await flood for c in batch]
            print(
                f"owner's login during a flood of {len(codes)}: {took * 1000:.0f} ms; "
                f"flood answers: {sorted(set(codes))}"
            )
            assert took < 1.0, took
            assert pb.OK not in codes

            # a stranger's five wrong guesses lock the pair, not the owner elsewhere
            for _ in range(5):  # a connection each: the gateway limits logins per connection
                with pytest.raises(RpcError) as err:
                    await (await _from(cluster, "127.0.0.3")).login("owner", "wrong password")
                assert err.value.code == pb.BAD_CREDENTIALS
            with pytest.raises(RpcError) as err:
                await (await _from(cluster, "127.0.0.3")).login("owner", PASSWORD)
            assert err.value.code == pb.LOCKED_OUT
            await (await _from(cluster, "127.0.0.1")).login("owner", PASSWORD)

    asyncio.run(main())
