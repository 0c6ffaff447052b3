"""Chatting in the real full-screen `soim` (tmux), against a cluster of real node processes.

Alice and Bob register, befriend and chat: each message shows its time and sender, and Alice's
own ones go from ✓✓ (delivered to Bob's client) to ✓✓ read when Bob opens the conversation.
Page Up at the top of a long conversation loads older history. They share a group whose
read counts show who read what. Carol, offline meanwhile, logs in to the right unread counts.
A resize redraws the conversation; a killed gateway replaced by a new one on the same port
leaves Alice's conversation complete: the message sent while she was cut off shows once, in
order, and she chats on.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from fabric.keys import load_client_plane_public
from tests.harness import Cluster, running_cluster
from tests.processes import NodeProcess
from tests.support import free_port
from tests.tui.terminal import Tmux

PASSWORD = "correct-horse"
OLD = 60  # messages of a conversation with more than one page of history


def pane(screen: str) -> list[str]:
    """The message pane's rows (right of the sidebar), without trailing spaces."""
    return [line.split("│", 1)[1].rstrip() for line in screen.splitlines()[1:-2] if "│" in line]


class Setup:
    """The cluster with two gateways on fixed ports (so one can be replaced in place)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.ports = [free_port(), free_port()]
        self.key = load_client_plane_public(cluster.keys_dir).decode()
        self.gateways: list[NodeProcess] = []

    async def start(self) -> None:
        c = self.cluster
        self.gateways = [c.start("gateway", SOIM_GATEWAY_PORT=str(p))[0] for p in self.ports]
        nodes = c.start("directory") + c.start("router", 2) + c.start("storage") + self.gateways
        await c.wait_alive(nodes)
        await c.wait_ready(self.gateways)  # each knows both routers: no session moves later

    def args(self, gateway: int) -> list[str]:
        return [
            "--server",
            f"tcp://127.0.0.1:{self.ports[gateway]}",
            "--server-key",
            self.key,
            "--device",
            "tui",
        ]

    async def restart_gateway(self, gateway: int) -> None:
        """kill -9 the gateway, and start a new one on the same port."""
        self.gateways[gateway].kill()
        self.gateways[gateway].wait(5)
        [fresh] = self.cluster.start("gateway", SOIM_GATEWAY_PORT=str(self.ports[gateway]))
        self.gateways[gateway] = fresh
        await self.cluster.wait_alive([fresh])
        await self.cluster.wait_ready([fresh])


@pytest.mark.timeout(150)
def test_chat_marks_groups_unread_resize_and_gateway_restart(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            setup = Setup(cluster)
            await setup.start()
            tmux = Tmux(tmp_path)
            try:
                await scenario(setup, tmux)
            finally:
                tmux.close()

    asyncio.run(main())


async def scenario(setup: Setup, tmux: Tmux) -> None:
    tmux.start("alice", setup.args(0))
    tmux.start("bob", setup.args(1))
    a = await tmux.register("alice", "Alice", PASSWORD)
    b = await tmux.register("bob", "Bob", PASSWORD)
    tmux.type("bob", f"/add -u {a}")
    await tmux.wait("alice", r"asks to be your friend — /add bob accepts")
    tmux.type("alice", f"/add -u {b}")
    await tmux.wait("bob", r"^ ● Alice ")

    # Carol, through the session library: befriends Alice and leaves a long history for her
    carol = await setup.cluster.client(1)
    c = (await carol.register("carol", PASSWORD, nickname="Carol")).user_id
    await carol.add_friend(a)
    tmux.type("alice", f"/add -u {c}")
    await tmux.wait("alice", r"^ ● Carol ")
    for i in range(1, OLD + 1):
        await carol.send(f"old {i:02d}", to_user=a)

    # 1:1: delivered, then read when Bob opens the conversation; Bob's reply, read at once
    tmux.type("alice", f"/open {b}")
    await tmux.wait("alice", rf"│ Bob \(uid {b}\) · online")
    tmux.type("alice", "hello bob")
    await tmux.wait("alice", r"│\d\d:\d\d alice: hello bob +✓✓$")
    await tmux.wait("bob", r"^ ● Alice +1 │")
    tmux.keys("bob", "Tab")
    await tmux.wait("bob", r"│\d\d:\d\d alice: hello bob$")
    await tmux.wait("alice", r"│\d\d:\d\d alice: hello bob +✓✓ read$")
    tmux.type("bob", "hi alice")
    await tmux.wait("alice", r"│\d\d:\d\d bob: hi alice$")
    await tmux.wait("bob", r"│\d\d:\d\d bob: hi alice +✓✓ read$")

    # a group: Carol joins too (and goes offline); read counts out of the other two members
    tmux.type("alice", "/group create devs")
    g = int((await tmux.wait("alice", r"^created group devs gid=(\d+)"))[1])
    await carol.group_join(g)
    await carol.close()
    tmux.type("bob", f"/group join {g}")
    await tmux.wait("bob", r"^ # devs ")
    tmux.type("alice", f"/open g:{g}")
    await tmux.wait("alice", rf"│ # devs \(g:{g}\) · 3 members")
    tmux.type("alice", "welcome to devs")
    await tmux.wait("bob", r"^ # devs +1 │")
    tmux.type("bob", f"/open g:{g}")
    tmux.type("bob", "thanks")  # at once: it goes to the group just opened
    await tmux.wait("bob", r"│\d\d:\d\d alice: welcome to devs\n.*│\d\d:\d\d bob: thanks +✓")
    await tmux.wait("alice", r"│\d\d:\d\d alice: welcome to devs +✓✓ read 1/2$")
    await tmux.wait("alice", r"│\d\d:\d\d bob: thanks$")

    # Carol's history with Alice: a page shows, Page Up at the top loads the older ones
    await tmux.wait("alice", rf"^ ○ Carol +{OLD} │")
    tmux.type("alice", f"/open {c}")
    await tmux.wait("alice", rf"│\d\d:\d\d carol: old {OLD}$")
    assert "old 01" not in tmux.screen("alice")
    await tmux.wait("alice", r"^ ○ Carol +│")  # read: no unread count
    for _ in range(3):
        tmux.keys("alice", "PPage")
    await tmux.wait("alice", r"│\d\d:\d\d carol: old 01$")
    tmux.keys("alice", "NPage", "NPage", "NPage")
    tmux.type("alice", "carol, are you there?")
    tmux.type("alice", "ping")
    await tmux.wait("alice", r"│\d\d:\d\d alice: ping +✓$")

    # Carol logs in: unread counts for Alice's two messages and the group's two
    tmux.start("carol", setup.args(1))
    await tmux.wait("carol", r"not logged in")
    tmux.type("carol", f"/login -u carol -p {PASSWORD}")
    await tmux.wait("carol", r"^ ● Alice +2 │")
    await tmux.wait("carol", r"^ # devs +2 │")
    tmux.type("carol", f"/open g:{g}")
    await tmux.wait("carol", r"│\d\d:\d\d alice: welcome to devs\n.*│\d\d:\d\d bob: thanks$")
    await tmux.wait("carol", r"^ # devs +│")
    await tmux.wait("carol", r"^ ● Alice +2 │")
    tmux.type("alice", f"/open g:{g}")
    await tmux.wait("alice", r"│\d\d:\d\d alice: welcome to devs +✓✓ read 2/2$")

    # a resize redraws the conversation at the new size, and back
    tmux.type("alice", f"/open {b}")
    await tmux.wait("alice", r"│\d\d:\d\d bob: hi alice$")
    tmux.resize("alice", 70, 20)
    await tmux.wait_layout("alice", 70, 20)
    await tmux.wait("alice", r"│\d\d:\d\d alice: hello bob +✓✓ read$")
    tmux.resize("alice", 120, 40)
    await tmux.wait_layout("alice", 120, 40)

    # Alice's gateway dies and a new one takes its port; Bob writes meanwhile
    await setup.restart_gateway(0)
    tmux.type("bob", f"/open {a}")
    await tmux.wait("bob", rf"│ Alice \(uid {a}\)")
    tmux.type("bob", "are you back?")
    await tmux.wait("bob", r"│\d\d:\d\d bob: are you back\? +✓")
    # back on its gateway, or failed over to the other one (a --server client knows of both)
    await tmux.wait(
        "alice", rf"^reconnected to 127\.0\.0\.1:({setup.ports[0]}|{setup.ports[1]})", timeout=30
    )
    await tmux.wait("alice", r"│\d\d:\d\d bob: are you back\?$")
    tmux.type("alice", "yes, back")
    await tmux.wait("bob", r"│\d\d:\d\d alice: yes, back$")
    await tmux.wait("alice", r"│\d\d:\d\d alice: yes, back +✓✓ read$")
    await tmux.wait("bob", r"│\d\d:\d\d bob: are you back\? +✓✓ read$")

    # the whole conversation, once each, in order, on both screens
    expected = [r"alice: hello bob", r"bob: hi alice", r"bob: are you back\?", r"alice: yes, back"]
    for name in ("alice", "bob"):
        rows = [r for r in pane(tmux.screen(name)) if re.match(r"\d\d:\d\d ", r)]
        assert len(rows) == len(expected), rows
        for row, want in zip(rows, expected, strict=True):
            assert re.match(rf"\d\d:\d\d {want}( |$)", row), rows
    assert not tmux.dead("alice") and not tmux.dead("bob")
