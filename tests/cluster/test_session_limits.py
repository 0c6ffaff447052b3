"""An operator sets the per-user request limit of a gateway: SOIM_SESSION_RATE and
SOIM_SESSION_BURST. A real gateway started with a burst of 5 lets a logged-in user make 5
requests at once (less what its client's own Sync took, plus what the rate refills meanwhile)
and refuses the rest with RATE_LIMITED;
a gateway given a burst of 0 stops at start with one line naming the variable."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fabric.methods import RpcError
from schema import common_pb2 as pb
from tests.harness import running_cluster

RATE, BURST, ASKED = 2, 5, 15


@pytest.mark.timeout(60)
def test_the_session_limits_are_settings(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            nodes = (
                cluster.start("directory")
                + cluster.start("router")
                + cluster.start(
                    "gateway", SOIM_SESSION_RATE=str(RATE), SOIM_SESSION_BURST=str(BURST)
                )
            )
            await cluster.wait_alive(nodes)
            alice = await cluster.client()
            await alice.register("alice", "correct horse")
            started = time.monotonic()
            # AddFriend is not idempotent: a refused one fails at once, it is not retried
            outcomes = await asyncio.gather(
                *(alice.add_friend(10**9 + i) for i in range(ASKED)), return_exceptions=True
            )
            elapsed = time.monotonic() - started
            limited = sum(isinstance(o, RpcError) and o.code == pb.RATE_LIMITED for o in outcomes)
            allowed = ASKED - limited
            # the client's own Sync after login may have taken a token or two
            assert BURST - 2 <= allowed <= BURST + RATE * elapsed + 1, (allowed, elapsed)

            bad = cluster.start("gateway", SOIM_SESSION_BURST="0")[0]
            assert bad.wait(20) != 0
            assert "SOIM_SESSION_BURST: must be between 1 and 1000000, got 0" in bad.log()

    asyncio.run(main())
