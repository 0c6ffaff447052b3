"""A client given one gateway (`--server`) against a cluster of real node processes with three
gateways: a send before login is answered once (the gateway's own counters show one Send and a
handful of frames, not a retry storm); when its gateway is killed (kill -9) in the middle of a
stream of sends, the client moves to another gateway it knows of (zeroconf, though it was given
one gateway) and finishes every pending send there — in `soim --plain` (acks with consecutive
seqs) and in the full-screen client in tmux (lines typed into the dead link end stored, ✓, none
failed) — and the receiver sees each message exactly once, in the order typed."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.test_storage import metric
from tests.harness import Cluster, running_cluster
from tests.processes import NodeProcess
from tests.support import async_wait_until
from tests.tui.lines import LineClient
from tests.tui.terminal import Tmux
from tests.tui.test_plain import PASSWORD
from tui.session import ClientSession

MESSAGES = 30
KILL_AFTER = 5  # messages acked before the gateway is killed
TYPED = 10  # lines typed in the full-screen client after its gateway was killed
SEND_SERVED = 'soim_rpc_served_total{code="UNAUTHENTICATED",method="client.Send"}'
FRAMES_IN = 'soim_frames_in_total{socket="client"}'


@dataclass(frozen=True)
class Gateway:
    node: NodeProcess
    endpoint: str

    @property
    def host(self) -> str:
        return self.endpoint.removeprefix("tcp://")


@pytest.mark.timeout(120)
def test_no_flood_before_login_and_failover_with_pending_sends(
    tmp_path: Path, cluster_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOIM_CLUSTER", cluster_name)  # what the clients discover

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            nodes = (
                cluster.start("directory")
                + cluster.start("router")
                + cluster.start("storage")
                + cluster.start("gateway", 3)
            )
            await cluster.wait_alive(nodes)
            by_id = {node.node_id: node for node in nodes}
            assert cluster.view is not None
            gateways = [
                Gateway(by_id[peer.node_id], peer.info.endpoints["client"])
                for peer in cluster.view.membership.alive("gateway")
            ]
            # the receivers, on the gateway that stays
            bob, erin = await cluster.client(2), await cluster.client(2)
            alice = LineClient(args(cluster, gateways[0]), tmp_path, "alice", env=cluster.env)
            try:
                await refused_once(cluster, gateways[0], alice)
                await plain_failover(cluster, gateways, alice, bob)
            finally:
                alice.close()
            tmux = Tmux(tmp_path)
            try:
                await screen_failover(cluster, gateways, tmux, erin)
            finally:
                tmux.close()

    asyncio.run(main())


def args(cluster: Cluster, gateway: Gateway) -> list[str]:
    return ["--server", gateway.endpoint, "--server-key", cluster.gateways()[0][1].decode()]


async def refused_once(cluster: Cluster, gateway: Gateway, alice: LineClient) -> None:
    """A send before login: one refusal, printed at once; the gateway saw it once."""
    node = gateway.node.node_id
    await alice.run("me", [re.compile("Unauthenticated.*")])  # the link is up
    served, frames = metric(cluster, node, SEND_SERVED), metric(cluster, node, FRAMES_IN)
    await alice.run("send -u 1 hello?", [re.compile("Unauthenticated.*")], timeout=3)
    await alice.run("me", [re.compile("Unauthenticated.*")])  # and nothing follows
    assert metric(cluster, node, SEND_SERVED) - served == 1
    assert metric(cluster, node, FRAMES_IN) - frames <= 10


async def received(receiver: ClientSession, sender: int, count: int) -> list[str]:
    """The bodies of the next `count` messages from `sender`, as they come."""
    got: list[str] = []

    def more() -> bool:
        while not receiver.events.empty():
            event = receiver.events.get_nowait()
            if event.message is not None and event.message.sender == sender:
                got.append(event.message.body)
        return len(got) >= count

    await async_wait_until(more, timeout=30, what=f"{count} messages at the receiver")
    return got


async def plain_failover(
    cluster: Cluster, gateways: list[Gateway], alice: LineClient, bob: ClientSession
) -> None:
    [m] = await alice.run(f"register -u alice -p {PASSWORD}", [re.compile(r"uid=(\d+), .*")])
    a = int(m[1])
    b = (await bob.register("bob", PASSWORD)).user_id
    await alice.run(f"add -u {b}", [f"friend request sent to {b}"])
    await bob.add_friend(a)
    await alice.expect([f"* bob (uid {b}) accepted your friend request"])

    for n in range(KILL_AFTER):
        await alice.run(f"send -u {b} m{n:02}", [f"sent to {b} seq={n + 1}"])
    gateways[0].node.kill()
    for n in range(KILL_AFTER, MESSAGES):  # typed at once, the first into the dead link
        alice.send(f"send -u {b} m{n:02}")
    rest = await alice.expect(
        [re.compile(r"\* .*|sent to .*")] * (MESSAGES - KILL_AFTER + 2), timeout=40
    )
    notices = [m[0] for m in rest if m[0].startswith("* ")]
    acks = [m[0] for m in rest if not m[0].startswith("* ")]
    assert notices[0] == "* connection lost; reconnecting", notices
    assert notices[1] in {f"* reconnected to {g.host}" for g in gateways[1:]}, notices
    assert acks == [f"sent to {b} seq={n + 1}" for n in range(KILL_AFTER, MESSAGES)]

    assert await received(bob, a, MESSAGES) == [f"m{n:02}" for n in range(MESSAGES)]
    [conv] = (await bob.sync()).conversations  # nothing stored twice
    assert conv.last_seq == MESSAGES


async def screen_failover(
    cluster: Cluster, gateways: list[Gateway], tmux: Tmux, erin: ClientSession
) -> None:
    tmux.start("dave", [*args(cluster, gateways[1]), "--device", "tui"])
    d = await tmux.register("dave", "Dave", PASSWORD)
    e = (await erin.register("erin", PASSWORD)).user_id
    tmux.type("dave", f"/add -u {e}")
    await tmux.wait("dave", f"friend request sent to {e}")
    await erin.add_friend(d)
    tmux.type("dave", f"/open {e}")
    await tmux.wait("dave", rf"│ erin \(uid {e}\)")

    gateways[1].node.kill()
    for n in range(TYPED):
        tmux.type("dave", f"t{n:02}")
    assert await received(erin, d, TYPED) == [f"t{n:02}" for n in range(TYPED)]
    await tmux.wait("dave", rf"│\d\d:\d\d dave: t{TYPED - 1:02} +✓")
    await tmux.wait("dave", rf"^ so-im │ dave \(uid {d}\) │ {re.escape(gateways[2].host)} │ online")
    assert "✗" not in tmux.screen("dave")
    [conv] = (await erin.sync()).conversations
    assert conv.last_seq == TYPED
