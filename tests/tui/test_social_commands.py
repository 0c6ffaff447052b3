"""`soim --plain` with three users on two gateways: decline, block and unblock, unfriend, the
online list of friends and shared groups (`users`, `users --all`), group kick and owner,
passwd and delete-account — each command's printed line and the notice the other user gets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.harness import running_cluster
from tests.tui.lines import LineClient
from tests.tui.test_plain import WHEN, host, rx, server_args, start_cluster
from tui.render_screen import masked

PASSWORD = "correct-horse"


def test_passwords_typed_are_masked() -> None:
    assert masked("/passwd 'old one' new-secret") == "/passwd " + "*" * 20
    assert masked("/delete-account -p secret --yes") == "/delete-account -p ****** --yes"


@pytest.mark.timeout(90)
def test_social_commands(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await start_cluster(cluster)
            clients = [
                LineClient(server_args(cluster, i % 2), tmp_path, name)
                for i, name in enumerate(("alice", "bob", "carol"))
            ]
            try:
                ids = []
                for i, client in enumerate(clients):
                    name = ("alice", "bob", "carol")[i]
                    [m] = await client.run(
                        f"register -u {name} -p {PASSWORD}",
                        [rx(rf"uid=(\d+), entryHost={host(cluster, i % 2)}")],
                    )
                    ids.append(int(m[1]))
                await script(*clients, *ids)
            finally:
                codes = [c.close() for c in clients]
            assert codes == [1, 1, 1]  # each script had a refused command

    asyncio.run(main())


async def script(
    alice: LineClient, bob: LineClient, carol: LineClient, a: int, b: int, c: int
) -> None:
    await bob.run(f"add -u {a}", [f"friend request sent to {a}"])
    await alice.expect([rx(rf"\* bob \(uid {b}\) asks to be your friend.*")])
    await alice.run(f"add -u {b}", [f"friends now with {b}"])
    await bob.expect([rx(rf"\* alice \(uid {a}\) accepted.*")])
    await carol.run(f"add -u {a}", [f"friend request sent to {a}"])
    await alice.expect([rx(rf"\* carol \(uid {c}\) asks to be your friend.*")])
    await alice.run("decline carol", ["declined the friend request of carol"])
    await carol.expect(["* alice declined or withdrew a request"])

    # the online list: my friends (and me); everyone with --all
    await alice.run("users", ["uid | account", f"{a} | alice", f"{b} | bob"])
    await carol.run("users", ["uid | account", f"{c} | carol"])
    await carol.run("users --all", ["uid | account", f"{a} | alice", f"{b} | bob", f"{c} | carol"])

    # block by name: bob's message is refused and alice looks offline to him; unblock by id
    await alice.run(
        "block bob",
        ["blocked bob: their messages and friend requests are refused, and they see you offline"],
    )
    await bob.run(f"send -u {a} are you there", [rx(r"Blocked.*")])
    head = "uid | account | nickname | online"
    await bob.run("friends", [head, f"{a} | alice | alice | offline"])
    await alice.run("friends", [head, f"{b} | bob | bob | blocked"])
    await alice.run(f"unblock {b}", [f"unblocked {b}"])
    await bob.run("friends", [head, f"{a} | alice | alice | online"])
    await alice.run("block nobody", [rx(r"(?i).*no such user: nobody")])

    # groups: kick and hand over, owner only
    [m] = await alice.run("group create den", [rx(r"created group den gid=(\d+)")])
    g = int(m[1])
    for member in (bob, carol):
        await member.run(f"group join {g}", [rx(rf"joined group den gid={g} .*")])
    await carol.run(f"group kick {g} bob", [rx("Forbidden: only the group's owner .*")])
    await alice.run(f"group kick {g} carol", [f"removed carol from g:{g}"])
    await carol.expect([f"* alice removed you from group {g}"])
    await alice.run(f"group owner #den {b}", ["bob owns #den now"])
    await bob.expect([f"* alice handed you group {g}: you own it now"])
    await alice.run(
        "group",
        [
            "gid | name | limit | members/limit | owner | created",
            rx(rf"{g} \| den \| \d+ \| 2/\d+ \| bob \| {WHEN}"),
        ],
    )

    # unfriend: the other side is told
    await bob.run("unfriend alice", ["no longer friends with alice"])
    await alice.expect(["* bob ended your friendship"])
    await alice.run("friends", [head, "(none)"])

    # passwd, then delete-account (asks for --yes first)
    await alice.run(
        f"passwd {PASSWORD} new-horse-99", ["password changed; your other sessions have ended"]
    )
    await alice.run("me", ["uid | account", f"{a} | alice"])
    await carol.run(f"delete-account -p {PASSWORD}", [rx("this deletes your account for good.*")])
    await carol.run(
        "delete-account -p wrong-horse --yes", ["Bad credentials: wrong account or password"]
    )
    carol.send(f"delete-account -p {PASSWORD} --yes")  # the reply and the session's end race
    got = sorted(m[0] for m in await carol.expect([rx(".+")] * 2))
    assert got[1] == "account deleted; goodbye"
    assert got[0] in (
        "* session ended: this account was deleted",
        "* session ended: revoked",
    )  # if the token audit saw it first
