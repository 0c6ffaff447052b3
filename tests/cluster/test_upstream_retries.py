"""The gateway's upstream calls are retried in one layer, `nodes.gateway.upstream.Upstream` by
`fabric.retry.CALL`, each attempt on the next live directory (real node processes): with one of
two directories frozen (SIGSTOP: its connections stay up, nobody has noticed yet), every client
call that needs a directory is answered OK on the client's first attempt — the gateway's retry
went to the other directory instead of asking the frozen one again until the client gave up —
and the gateway served each call exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from fabric import timing
from fabric.methods import RpcError
from schema import common_pb2 as pb
from tests.cluster.test_storage import metric
from tests.harness import running_cluster

PASSWORD = "correct horse"
CALLS = 6
"""Calls made at once while a directory is frozen: round robin sends half to it."""
SERVED = 'soim_rpc_served_total{{code="{code}",method="client.SearchUsers"}}'


@pytest.mark.timeout(90)
def test_a_frozen_directory_costs_the_gateway_one_attempt_not_the_client_a_call(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            frozen, other = cluster.start("directory", 2)
            nodes = [frozen, other, *cluster.start("router"), *cluster.start("gateway")]
            await cluster.wait_alive(nodes)
            [gateway] = cluster.alive("gateway")
            alice = await cluster.client()
            await alice.register("alice", PASSWORD)
            for _ in range(4):  # both directories answer: the gateway has a link to each
                assert [u.account for u in (await alice.search_users("ali")).users] == ["alice"]
            served = {code: metric(cluster, gateway, SERVED.format(code=code)) for code in CODES}

            os.kill(frozen.pid, signal.SIGSTOP)
            try:
                replies = await asyncio.gather(*(alice.search_users("ali") for _ in range(CALLS)))
            finally:
                os.kill(frozen.pid, signal.SIGCONT)

            assert all([u.account for u in r.users] == ["alice"] for r in replies)
            now = {code: metric(cluster, gateway, SERVED.format(code=code)) for code in CODES}
            assert now["OK"] - served["OK"] == CALLS  # one attempt of the client's each
            assert all(now[code] == served[code] for code in CODES if code != "OK"), now

    asyncio.run(main())


@pytest.mark.timeout(90)
def test_a_login_waits_briefly_for_a_directory_to_come(tmp_path: Path, cluster_name: str) -> None:
    """A gateway that knows no live directory holds a client's call up to NONE_ALIVE_WAIT_S for
    one: a Register sent before any directory started is served once one joins; with none
    coming it is refused UNAVAILABLE within that bound (plus the gateway's deadline slack)."""

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            nodes = cluster.start("router") + cluster.start("gateway")
            await cluster.wait_alive(nodes)
            alice = await cluster.client()
            began = time.monotonic()
            with pytest.raises(RpcError) as refused:
                await alice.register("alice", PASSWORD)
            assert refused.value.code == pb.UNAVAILABLE
            assert time.monotonic() - began < timing.NONE_ALIVE_WAIT_S + 3.0

            waiting = asyncio.ensure_future(alice.register("alice", PASSWORD))
            cluster.start("directory")
            assert (await waiting).user_id > 0

    asyncio.run(main())


CODES = ("OK", "TIMEOUT", "UNAVAILABLE", "INTERNAL")
