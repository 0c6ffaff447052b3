"""The real full-screen `soim` in a pty (tmux), against a cluster of real node processes.

Two users register, befriend each other and share a group, all by typing `/commands`; the
sidebars show the friend with an online dot and the group; the input line edits (left, right,
home, end, backspace) and recalls history (up, down); errors land on the status line as
humanised codes; a resize redraws everything at the new size.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.harness import Cluster, running_cluster
from tests.tui.terminal import Tmux

PASSWORD = "correct-horse"


def server_args(cluster: Cluster, gateway: int) -> list[str]:
    endpoint, key = cluster.gateways()[gateway]
    return ["--server", endpoint, "--server-key", key.decode(), "--device", "tui"]


@pytest.mark.timeout(90)
def test_commands_sidebar_editing_and_resize(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            nodes = (
                cluster.start("directory")
                + cluster.start("router", 2)
                + cluster.start("gateway", 2)
                + cluster.start("storage")
            )
            await cluster.wait_alive(nodes)
            tmux = Tmux(tmp_path)
            try:
                tmux.start("alice", server_args(cluster, 0))
                tmux.start("bob", server_args(cluster, 1))
                await tmux.wait("alice", r"not logged in")
                await scenario(tmux)
            finally:
                tmux.close()

    asyncio.run(main())


async def scenario(tmux: Tmux) -> None:
    # the password never shows, not even while typing
    tmux.type("alice", f"/register -u alice -p {PASSWORD} -n Alice", enter=False)
    await tmux.wait("alice", r"^> /register -u alice -p \*{13} -n Alice$")
    tmux.keys("alice", "Enter")
    a = int((await tmux.wait("alice", r"alice \(uid (\d+)\)"))[1])
    b = await tmux.register("bob", "Bob", PASSWORD)
    assert PASSWORD not in tmux.screen("alice") + tmux.screen("bob")

    # befriend: a request notice, then both sidebars show the other one online
    tmux.type("bob", "/search -u ali")
    await tmux.wait("bob", rf"│uid \| account \| nickname\s*\n.*│{a} \| alice \| Alice")
    tmux.type("bob", f"/add -u {a}")
    await tmux.wait("bob", rf"│friend request sent to {a}")
    await tmux.wait("alice", rf"│\* bob \(uid {b}\) asks to be your friend — /add bob accepts")
    tmux.type("alice", f"/add -u {b}")
    await tmux.wait("alice", r"^ ● Bob ")
    await tmux.wait("bob", r"^ ● Alice ")
    await tmux.wait("bob", rf"│\* alice \(uid {a}\) accepted: you are friends now")

    # a group: created by alice, joined by bob, in both sidebars; its members in the console
    tmux.type("alice", "/group create devs")
    gid = int((await tmux.wait("alice", r"│created group devs gid=(\d+)"))[1])
    await tmux.wait("alice", r"^ # devs ")
    tmux.type("bob", f"/group join {gid}")
    await tmux.wait("bob", r"^ # devs ")
    tmux.type("bob", f"/group users {gid}")
    await tmux.wait("bob", rf"│{a} \| alice \| Alice \| online \| [-\d: ]+\s*\n.*│{b} \| bob \|")

    # opening a conversation: its title; Tab cycles console → friends → groups
    tmux.type("alice", f"/open {b}")
    await tmux.wait("alice", rf"│ Bob \(uid {b}\) · online")
    tmux.keys("alice", "Tab")
    await tmux.wait("alice", rf"│ # devs \(g:{gid}\) · 2 members")
    tmux.keys("alice", "Tab")
    await tmux.wait("alice", r"│ console — /help")

    # editing: type, move, delete, insert; history with up and down
    tmux.type("alice", "/mx", enter=False)
    tmux.keys("alice", "BSpace", "Home", "Right", "Right")
    tmux.type("alice", "e", enter=False)
    tmux.keys("alice", "End")
    await async_input(tmux, "alice", "> /me")
    tmux.keys("alice", "Enter")
    await tmux.wait("alice", rf"│uid \| account\s*\n.*│{a} \| alice")
    tmux.type("alice", "/friends", enter=False)
    tmux.keys("alice", "C-u", "Up")
    await async_input(tmux, "alice", "> /me")
    tmux.keys("alice", "Up")
    await async_input(tmux, "alice", f"> /open {b}")
    tmux.keys("alice", "Down", "Down")
    await async_input(tmux, "alice", ">")

    # errors: the status line names the code, humanised
    tmux.type("alice", f"/group join {gid}")
    await tmux.wait("alice", r"│Already member: you are a member already")
    tmux.type("alice", "/frobnicate")
    await tmux.wait("alice", r"│unknown command: frobnicate")
    tmux.type("alice", "hello?")
    await tmux.wait("alice", r"^open a conversation first")
    tmux.type("alice", "/help")
    await tmux.wait("alice", r"│send \(-u USER_ID \| -g GROUP_ID\) TEXT\.\.\.  — send to")

    # a resize: everything drawn again for 80x24, and back
    tmux.resize("alice", 80, 24)
    await tmux.wait_layout("alice", 80, 24)
    assert "● Bob" in tmux.screen("alice") and "# devs" in tmux.screen("alice")
    tmux.resize("alice", 120, 40)
    await tmux.wait_layout("alice", 120, 40)


async def async_input(tmux: Tmux, name: str, want: str) -> None:
    await tmux.wait(name, rf"^{re.escape(want)}\s*\Z")
