"""Names instead of ids, against a cluster of real node processes, in `soim --plain` and in the
full-screen `soim` (tmux): `add bob`, `msg alice …`, `group join rustaceans`,
`msg #rustaceans …`, `open bob`, `open #rustaceans`; refusals that say what is wrong (no such
user, not your friend yet, you cannot message yourself, no such group); `help COMMAND`; the
exit status of `soim --plain` (0 all worked, 1 a command failed, 2 a line was not a command);
Tab completing a command, an account and a #group on the real terminal."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.harness import Cluster, running_cluster
from tests.tui.lines import LineClient
from tests.tui.terminal import Tmux
from tests.tui.test_plain import run_script, server_args, start_cluster

PASSWORD = "correct horse"


@pytest.mark.timeout(120)
def test_names_refusals_exit_status_and_tab(
    tmp_path: Path, cluster_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no remembered logins

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await start_cluster(cluster)
            carol = await cluster.client(1)
            await carol.register("carol", PASSWORD)
            alice = LineClient(server_args(cluster, 0), tmp_path, "alice")
            bob = LineClient(server_args(cluster, 1), tmp_path, "bob")
            try:
                g = await by_name(alice, bob)
            finally:
                codes = alice.close(), bob.close()
                await carol.close()
            assert codes == (1, 0)  # alice's refused sends; bob's commands all worked
            await exit_status(cluster, tmp_path)
            tmux = Tmux(tmp_path)
            try:
                await tab_completion(cluster, tmux, g)
            finally:
                tmux.close()

    asyncio.run(main())


async def by_name(alice: LineClient, bob: LineClient) -> int:
    """The plain-mode session, by name; the group's id."""
    await alice.run(f'register -u alice -p "{PASSWORD}"', [re.compile(r"uid=(\d+), .*")])
    [m] = await bob.run(f'register -u bob -p "{PASSWORD}"', [re.compile(r"uid=(\d+), .*")])
    b = int(m[1])
    await bob.run("add alice", ["friend request sent to alice"])
    await alice.expect([f"* bob (uid {b}) asks to be your friend; add bob accepts"])
    await alice.run("add bob", ["friends now with bob"])
    await bob.expect([re.compile(r"\* alice \(uid \d+\) accepted your friend request")])
    await bob.run("msg alice hi alice!", ["sent to alice seq=1"])
    await alice.expect(["bob: hi alice!"])
    [m] = await alice.run(
        "group create rustaceans",
        [
            re.compile(
                r"created group rustaceans "
                r"gid=(\d+)"
            )
        ],
    )
    g = int(m[1])
    await bob.run("group join rustaceans", [f"joined group rustaceans gid={g} (2/500)"])
    await bob.run("msg #rustaceans hello group", ["sent to #rustaceans seq=1"])
    await alice.expect([f"[g:{g}] bob: hello group"])
    await alice.run("open bob", [f"open: bob ({b})"])
    await alice.run("open #rustaceans", [f"open: rustaceans (g:{g})"])
    await alice.run("history -n 1", [f"[g:{g}] bob: hello group"])
    await bob.run("send -u alice by name too", ["sent to alice seq=2"])
    await alice.expect(["bob: by name too"])

    # refusals say what is wrong
    await alice.run("msg zed hi", ["No such user: zed"])
    await alice.run("send -u 987654321 hi", ["No such user: 987654321"])
    await alice.run("msg carol hi", ["Not your friend yet: carol (add carol first)"])
    await alice.run("msg alice hi", ["You cannot message yourself"])
    await alice.run("open alice", ["You cannot message yourself"])
    await alice.run("msg #nowhere hi", ["No such group: #nowhere"])
    await alice.run("open zed", ["No such user: zed"])
    await alice.run("add Zed!", ["No such user: Zed!"])  # not an account name: not asked
    await alice.run(
        "help msg",
        [
            "msg — send to a friend or a #group",
            "Usage: msg WHO TEXT...",
            "",
            "WHO is a friend (account name or user id) or a group (#NAME or g:GROUP_ID).",
        ],
    )
    return g


async def exit_status(cluster: Cluster, tmp_path: Path) -> None:
    """0 when every command worked, 1 after a refusal, 2 after a line that is no command."""
    login = f"login -u bob -p '{PASSWORD}'\n"
    cases = [
        (login + "friends\n", 0),
        (login + "msg zed hi\nme\n", 1),
        ("login -u bob -p wrong-password\n", 1),
        (login + "send hi\n", 2),
        (login + "dance\nmsg zed hi\n", 2),
    ]
    for script, status in cases:
        await run_script(cluster, script, tmp_path, None, status=status)


async def tab_completion(cluster: Cluster, tmux: Tmux, g: int) -> None:
    tmux.start("alice", server_args(cluster, 0))
    tmux.type("alice", f'/login -u alice -p "{PASSWORD}"')
    await tmux.wait("alice", r"^ [●○] bob ")
    await tmux.wait("alice", r"│> /login -u alice -p \*{15}$")  # a quoted password too
    tmux.type("alice", "/ms", enter=False)
    tmux.keys("alice", "Tab")
    await tmux.wait("alice", r"^> /msg\s*$")
    tmux.type("alice", "b", enter=False)
    tmux.keys("alice", "Tab")
    await tmux.wait("alice", r"^> /msg bob\s*$")
    tmux.type("alice", "hi from the terminal")
    await tmux.wait("alice", r"sent to bob")
    tmux.type("alice", "/open #ru", enter=False)
    tmux.keys("alice", "Tab")
    await tmux.wait("alice", r"^> /open #rustaceans\s*$")
    tmux.keys("alice", "Enter")
    await tmux.wait("alice", rf"│ # rustaceans \(g:{g}\)")
    tmux.type("alice", "/help op", enter=False)
    tmux.keys("alice", "Tab", "Enter")
    await tmux.wait("alice", r"Usage: open TARGET")
    tmux.type("alice", "/msg zed hi")
    await tmux.wait("alice", r"No such user: zed")
