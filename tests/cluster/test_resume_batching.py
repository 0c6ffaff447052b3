"""Resumes are verified and bound in batches: `nodes.gateway.upstream.Batched` on its own (one
call in flight, each item its own result), then many clients resuming at once through real
gateways, routers and a directory — each still gets its own answer (a disabled account, an
expired or forged token refused) and every resumed session is bound at its owner router."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fabric import keys
from fabric.methods import RpcError
from nodes.directory.tokens import TokenSigner, signing_key
from nodes.gateway.upstream import Batched
from schema import cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import DIRECTORY
from schema.contracts.router import ROUTER
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until
from tools.local_cluster import LOAD_TEST_LIMITS


def test_batched_sends_what_queued_meanwhile_in_one_call() -> None:
    async def main() -> None:
        calls: list[list[int]] = []
        release = asyncio.Event()

        async def send(items: list[int]) -> list[int]:
            calls.append(items)
            await release.wait()
            if 13 in items:
                raise RpcError(pb.UNAVAILABLE, "down")
            return [i * 10 for i in items]

        batched: Batched[int, int] = Batched(send, max_items=3)
        first = [batched.submit(i) for i in (1, 2)]  # one pass: one call
        await async_wait_until(lambda: calls, what="the first call")
        later = [batched.submit(i) for i in (3, 4, 5, 6, 13)]  # queued while it is out
        gone = batched.submit(7)
        gone.cancel()  # its caller gave up; the others are unaffected
        release.set()
        assert await asyncio.gather(*first) == [10, 20]
        assert await asyncio.gather(*later[:3]) == [30, 40, 50]
        for fut in later[3:]:
            with pytest.raises(RpcError) as err:
                await fut
            assert err.value.code == pb.UNAVAILABLE
        assert calls == [[1, 2], [3, 4, 5], [6, 13, 7]]  # one in flight, at most 3 each
        assert await batched.submit(8) == 80  # and it starts again when idle

    asyncio.run(main())


def test_batched_refuses_a_wrong_number_of_results() -> None:
    async def main() -> None:
        async def send(items: list[int]) -> list[int]:
            return items[:1]

        batched: Batched[int, int] = Batched(send, max_items=10)
        futs = [batched.submit(i) for i in range(2)]
        for fut in futs:
            with pytest.raises(RpcError) as err:
                await fut
            assert err.value.code == pb.INTERNAL

    asyncio.run(main())


async def _sessions_with_device(cluster: Cluster, user_ids: list[int], device: str) -> int:
    """Sessions with `device` the routers hold for these users."""
    assert cluster.view is not None
    found = 0
    for router in cluster.alive("router"):
        reply = await cluster.view.peers.get(router).call(
            ROUTER["Lookup"], cluster_pb2.UserIds(user_ids=user_ids), timeout=5
        )
        found += sum(s.device == device for u in reply.users for s in u.sessions)
    return found


@pytest.mark.timeout(90)
def test_many_resumes_at_once_each_get_their_own_answer(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(
            tmp_path, cluster_name, f"sqlite:{tmp_path}/db", LOAD_TEST_LIMITS
        ) as cluster:
            nodes = (
                cluster.start("directory") + cluster.start("router", 2) + cluster.start("gateway")
            )
            await cluster.wait_alive(nodes)
            users = []
            for i in range(6):
                client = await cluster.client()
                users.append(await client.register(f"user{i}", "correct horse"))
            assert cluster.view is not None
            directory = cluster.view.peers.get(cluster.alive("directory")[0])
            await directory.call(
                DIRECTORY["SetDisabled"],
                cluster_pb2.DirDisableRequest(user_id=users[0].user_id, disabled=True),
                timeout=5,
            )
            secret = keys.load_secret(cluster.keys_dir, keys.TOKEN_SECRET)
            signer = TokenSigner(signing_key(secret), 3600)
            expired, _ = signer.issue(users[1].user_id, expires_ms=int(time.time() * 1000) - 1)

            asks = [
                (users[0].token, pb.TOKEN_INVALID, 0),  # disabling revoked it
                (expired, pb.TOKEN_INVALID, 0),
                ("forged.token.value", pb.TOKEN_INVALID, 0),
            ]
            for _ in range(8):  # a resume rotates its token: each needs one of its own
                for u in users[1:]:  # (and a connection logs in only so often)
                    logins = await cluster.client()
                    token = (await logins.login(u.account, "correct horse")).token
                    asks.append((token, pb.OK, u.user_id))
            clients = [await cluster.client(device="resumed") for _ in asks]
            outcomes = await asyncio.gather(
                *(c.resume(token) for c, (token, _, _) in zip(clients, asks, strict=True)),
                return_exceptions=True,
            )
            for (_, code, user_id), outcome in zip(asks, outcomes, strict=True):
                if code == pb.OK:
                    assert not isinstance(outcome, BaseException), outcome
                    assert outcome.user_id == user_id and outcome.token
                else:
                    assert isinstance(outcome, RpcError) and outcome.code == code, outcome

            ids = [u.user_id for u in users]
            resumed = sum(code == pb.OK for _, code, _ in asks)

            async def bound() -> bool:
                return await _sessions_with_device(cluster, ids, "resumed") == resumed

            await async_wait_until(bound, what=f"{resumed} resumed sessions bound")
            await asyncio.gather(
                *(
                    client.logout()
                    for client, (_, code, _) in zip(clients, asks, strict=True)
                    if code == pb.OK
                )
            )
            assert await _sessions_with_device(cluster, ids, "resumed") == 0

    asyncio.run(main())
