"""`soim --plain --server G0` against a cluster of real node processes: a send before login is
answered once (the gateway's own counters show one Send and a handful of frames, not a retry
storm), and when G0 is killed (kill -9) in the middle of a stream of sends the client moves to
the other gateway it knows of (discovery, though it was given one gateway) and finishes every
pending send there: the receiver sees each message exactly once, in the order typed, and the
acks carry consecutive seqs."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.cluster.test_storage import metric
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until
from tests.tui.lines import LineClient
from tests.tui.test_plain import PASSWORD, server_args

MESSAGES = 30
KILL_AFTER = 5  # acks seen before the gateway is killed
SEND_SERVED = 'soim_rpc_served_total{code="UNAUTHENTICATED",method="client.Send"}'
FRAMES_IN = 'soim_frames_in_total{socket="client"}'


@pytest.mark.timeout(90)
def test_no_flood_before_login_and_failover_with_pending_sends(tmp_path: Path,
                                                                cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            nodes = (cluster.start("directory") + cluster.start("router")
                     + cluster.start("storage") + cluster.start("gateway", 2))
            await cluster.wait_alive(nodes)
            gateways = {p.node_id: p for p in nodes if p.role == "gateway"}
            first = cluster.view.membership.alive("gateway")[0].node_id  # type: ignore[union-attr]
            alice = LineClient(server_args(cluster, 0), tmp_path, "alice", env={
                **cluster.env, "XDG_CONFIG_HOME": str(tmp_path / "alice-config")})
            try:
                await refused_once(cluster, first, alice)
                await failover(cluster, gateways[first], alice)
            finally:
                alice.close()

    asyncio.run(main())


async def refused_once(cluster: Cluster, gateway: str, alice: LineClient) -> None:
    """A send before login: one refusal, printed at once; the gateway saw it once."""
    await alice.run("me", [re.compile("Unauthenticated.*")])  # the link is up
    served, frames = metric(cluster, gateway, SEND_SERVED), metric(cluster, gateway, FRAMES_IN)
    await alice.run("send -u 1 hello?", [re.compile("Unauthenticated.*")], timeout=3)
    await alice.run("me", [re.compile("Unauthenticated.*")])  # and nothing follows
    assert metric(cluster, gateway, SEND_SERVED) - served == 1
    assert metric(cluster, gateway, FRAMES_IN) - frames <= 10


async def failover(cluster: Cluster, doomed: object, alice: LineClient) -> None:
    [m] = await alice.run(f"register -u alice -p {PASSWORD}", [re.compile(r"uid=(\d+), .*")])
    a = int(m[1])
    bob = await cluster.client(1, device="receiver")
    b = (await bob.register("bob", PASSWORD)).user_id
    await alice.run(f"add -u {b}", [f"friend request sent to {b}"])
    await bob.add_friend(a)
    await alice.expect([f"* bob (uid {b}) accepted your friend request"])

    other = cluster.gateway_endpoints()[1].removeprefix("tcp://")  # the one that stays
    for n in range(KILL_AFTER):
        await alice.run(f"send -u {b} m{n:02}", [f"sent to {b} seq={n + 1}"])
    doomed.kill()  # type: ignore[attr-defined]
    for n in range(KILL_AFTER, MESSAGES):  # typed at once, the first into the dead link
        alice.send(f"send -u {b} m{n:02}")
    rest = await alice.expect([re.compile(r"\* .*|sent to .*")] * (MESSAGES - KILL_AFTER + 2),
                              timeout=40)
    notices = [m[0] for m in rest if m[0].startswith("* ")]
    acks = [m[0] for m in rest if not m[0].startswith("* ")]
    assert notices[0] == "* connection lost; reconnecting", notices
    assert notices[1] == f"* reconnected to {other}", notices
    assert acks == [f"sent to {b} seq={n + 1}" for n in range(KILL_AFTER, MESSAGES)]

    got: list[str] = []

    async def received() -> bool:
        while not bob.events.empty():
            event = bob.events.get_nowait()
            if event.message is not None and event.message.sender == a:
                got.append(event.message.body)
        return len(got) >= MESSAGES

    await async_wait_until(received, timeout=20, what="every message at the receiver")
    assert got == [f"m{n:02}" for n in range(MESSAGES)]
    [conv] = (await bob.sync()).conversations  # nothing stored twice
    assert conv.last_seq == MESSAGES
