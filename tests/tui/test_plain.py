"""`soim --plain` against a cluster of real node processes: a script of the so-im commands from
two users, each command's printed output checked line by line — tables, acks, incoming
messages as `sender: text`, history, what arrived while offline (printed once after the next
login), errors as humanised codes; a script on stdin that simply ends (a pipe, and a regular
file) runs to completion; the exit status is 0, 1 after a failed command, 2 after a line that
is not a command."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster, SharedCluster
from tests.tui.lines import LineClient
from tests.tui.terminal import ROOT, SOIM

PASSWORD = "correct-horse"
WHEN = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}"


def rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


async def start_cluster(cluster: Cluster) -> None:
    nodes = (
        cluster.start("directory")
        + cluster.start("router", 2)
        + cluster.start("gateway", 2)
        + cluster.start("storage")
    )
    await cluster.wait_alive(nodes)
    await cluster.wait_ready([n for n in nodes if n.role == "gateway"])


def server_args(cluster: Cluster, gateway: int) -> list[str]:
    endpoint, key = cluster.gateways()[gateway]
    return ["--server", endpoint, "--server-key", key.decode()]


def host(cluster: Cluster, gateway: int) -> str:
    return re.escape(cluster.gateways()[gateway][0].removeprefix("tcp://"))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedCluster]:
    """One cluster for the module's tests: they stop no node, and their users differ."""
    tmp = tmp_path_factory.mktemp("plain")
    cluster = SharedCluster(tmp, f"t{uuid.uuid4().hex[:12]}", f"sqlite:{tmp}/db", start_cluster)
    yield cluster
    cluster.close()


@pytest.mark.timeout(90)
def test_the_command_script(tmp_path: Path, shared: SharedCluster) -> None:
    async def main(cluster: Cluster) -> None:
        alice = LineClient(server_args(cluster, 0), tmp_path, "alice")
        bob = LineClient(server_args(cluster, 1), tmp_path, "bob")
        try:
            await script(cluster, alice, bob)
        finally:
            codes = alice.close(), bob.close()
        assert codes == (2, 1)  # alice typed bad lines; bob's commands failed

    shared.run(main)


async def script(cluster: Cluster, alice: LineClient, bob: LineClient) -> None:
    # register (and log in), on two gateways
    [m] = await alice.run(
        f"register -u alice -p {PASSWORD} -n Alice",
        [rx(rf"uid=(\d+), entryHost={host(cluster, 0)}")],
    )
    a = int(m[1])
    [m] = await bob.run(
        f"register -u bob -p {PASSWORD}", [rx(rf"uid=(\d+), entryHost={host(cluster, 1)}")]
    )
    b = int(m[1])

    # search -u, add -u from both sides, with the notices each side gets
    await bob.run("search -u ali", ["uid | account | nickname", f"{a} | alice | Alice"])
    await bob.run(f"add -u {a}", [f"friend request sent to {a}"])
    await alice.expect([f"* bob (uid {b}) asks to be your friend; add bob accepts"])
    await bob.run(
        "friends", ["uid | account | nickname | online", f"{a} | alice | Alice | request sent"]
    )
    await alice.run(f"add -u {b}", [f"friends now with {b}"])
    await bob.expect([f"* alice (uid {a}) accepted your friend request"])
    await alice.run("friends", ["uid | account | nickname | online", f"{b} | bob | bob | online"])
    await bob.run("friends", ["uid | account | nickname | online", f"{a} | alice | Alice | online"])
    await alice.run("users", ["uid | account", f"{a} | alice", f"{b} | bob"])

    # groups: create, search, join, members, mine
    [m] = await alice.run("group create devs", [rx(r"created group devs gid=(\d+)")])
    g = int(m[1])
    _, m = await bob.run(
        "group search de",
        ["gid | name | limit | members | created", rx(rf"{g} \| devs \| (\d+) \| 1 \| {WHEN}")],
    )
    limit = int(m[1])
    await bob.run(f"group join {g}", [f"joined group devs gid={g} (2/{limit})"])
    await bob.run(
        f"group users {g}",
        [
            "uid | account | nickname | online | last active",
            rx(rf"{a} \| alice \| Alice \| online \| {WHEN}"),
            rx(rf"{b} \| bob \| bob \| online \| {WHEN}"),
        ],
    )
    await alice.run(
        "group",
        [
            "gid | name | limit | members/limit | owner | created",
            rx(rf"{g} \| devs \| {limit} \| 2/{limit} \| alice \| {WHEN}"),
        ],
    )
    await alice.run(f"open g:{g}", [f"open: devs (g:{g})"])
    await alice.run(
        "group users",
        [
            "uid | account | nickname | online | last active",
            rx(rf"{a} \| alice .*"),
            rx(rf"{b} \| bob .*"),
        ],
    )
    await bob.run("me", ["uid | account", f"{b} | bob"])

    # messages: acks with their seq, incoming as `sender: text`, history of the open one
    await bob.run(f"send -u {a} hello alice", [f"sent to {a} seq=1"])
    await alice.expect(["bob: hello alice"])
    await alice.run(f"send -g {g} hi devs", [f"sent to g:{g} seq=1"])
    await bob.expect([f"[g:{g}] alice: hi devs"])
    await alice.run(f"send -u {b} hi   bob", [f"sent to {b} seq=2"])
    await bob.expect(["alice: hi bob"])
    await alice.run(f"open {b}", [f"open: bob ({b})"])
    await alice.run("history -n 5", ["bob: hello alice", "alice: hi bob"])
    await alice.run("history -n 1", ["alice: hi bob"])

    # failures are the code's name, humanised, with the detail
    await alice.run(f"add -u {a}", ["Self friend: you cannot befriend yourself"])
    await alice.run(f"add -u {b}", ["Already friends: you are friends already"])
    await bob.run("group create devs", ["Already exists: group name 'devs' is taken"])
    await bob.run(f"group join {g}", ["Already member: you are a member already"])
    await alice.run("frobnicate now", ["unknown command: frobnicate"])
    await alice.run("send hello", ["usage: send (-u USER_ID | -g GROUP_ID) TEXT..."])
    await alice.run("open 999999", ["Not your friend yet: 999999 (add 999999 first)"])

    await bob.run("exit", ["bye bye"])
    assert bob.proc.wait(10) == 1  # group create and join were refused

    # what came while Bob was away prints after his next login, once: it is marked read
    await alice.run(f"send -u {b} see you", [f"sent to {b} seq=3"])
    await alice.run(f"send -g {g} bye devs", [f"sent to g:{g} seq=2"])
    for unread in (["alice: see you", f"[g:{g}] alice: bye devs"], []):
        again = LineClient(
            server_args(cluster, 1),
            alice.err_path.parent,
            "bob-again",
            env={"XDG_CONFIG_HOME": str(cluster.tmp_path / "new-device")},
        )
        try:
            await again.run(
                f"login -u bob -p {PASSWORD}", [rx(rf"uid={b}, entryHost={host(cluster, 1)}")]
            )
            if unread:  # one line per conversation, in the order the sync lists them
                got = await again.expect([rx(".+")] * len(unread))
                assert sorted(m[0] for m in got) == sorted(unread)
            await again.run("me", ["uid | account", f"{b} | bob"])
        finally:
            assert again.close() == 0


@pytest.mark.timeout(60)
def test_a_script_that_ends_without_exit(tmp_path: Path, shared: SharedCluster) -> None:
    """stdin at EOF after the last command, from a pipe and from a file: all output, exit 0."""

    async def main(cluster: Cluster) -> None:
        script = (
            f"register -u carol -p {PASSWORD} -n Carol\nme\ngroup create readers\ngroup\nfriends\n"
        )
        piped = await run_script(cluster, script, tmp_path, None)
        lines = piped.splitlines()
        assert re.fullmatch(rf"uid=(\d+), entryHost={host(cluster, 0)}", lines[0])
        uid = lines[0].split(",")[0].removeprefix("uid=")
        assert lines[1:4] == ["uid | account", f"{uid} | carol", lines[3]]
        assert re.fullmatch(r"created group readers gid=\d+", lines[3])
        assert lines[4] == "gid | name | limit | members/limit | owner | created"
        assert re.fullmatch(rf"\d+ \| readers \| \d+ \| 1/\d+ \| carol \| {WHEN}", lines[5])
        assert lines[6:] == ["uid | account | nickname | online", "(none)"]

        path = tmp_path / "script.txt"
        path.write_text(f"login -u carol -p {PASSWORD}\nme\nlogin -u carol -p wrong-one\n")
        from_file = await run_script(cluster, "", tmp_path, path, status=1)
        assert from_file.splitlines() == [
            lines[0],
            "uid | account",
            f"{uid} | carol",
            "Bad credentials: wrong account or password",
        ]

        # no --server: the cluster's gateways are found by zeroconf, the key from the TXT
        found = await run_script(
            cluster, f"login -u carol -p {PASSWORD}\n", tmp_path, None, args=[], env=cluster.env
        )
        hosts = [e.removeprefix("tcp://") for e, _ in cluster.gateways()]
        assert found.splitlines() in [[f"uid={uid}, entryHost={h}"] for h in hosts]

    shared.run(main)


async def run_script(
    cluster: Cluster,
    script: str,
    log_dir: Path,
    path: Path | None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    status: int = 0,
) -> str:
    """Run `soim --plain ARGS` (default: gateway 0) on `script` (a pipe) or on the file
    `path`; its stdout (its exit status must be `status`)."""
    with open(path or log_dir / "empty", "a+b") as stdin_file:
        stdin_file.seek(0)
        proc = await asyncio.create_subprocess_exec(
            *SOIM,
            "--plain",
            *(server_args(cluster, 0) if args is None else args),
            cwd=ROOT,
            stdin=stdin_file if path else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        out, err = await asyncio.wait_for(
            proc.communicate(None if path else script.encode()), timeout=20
        )
    assert proc.returncode == status, err.decode()
    return out.decode()


@pytest.mark.timeout(30)
def test_bad_arguments_and_settings_are_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = [
        (["--server", "localhost:7000"], {}, "soim: --server: not a tcp://host:port endpoint"),
        (
            ["--server", "tcp://127.0.0.1:7000", "--server-key", "short"],
            {},
            "soim: --server-key: must be a Z85 public key of 40 characters",
        ),
        (
            ["--server", "tcp://127.0.0.1:7000"],
            {"SOIM_KEYS_DIR": str(tmp_path / "none"), "XDG_CONFIG_HOME": str(tmp_path / "config")},
            "soim: no gateway key to trust for tcp://127.0.0.1:7000: pass --server-key KEY",
        ),
        (
            [],
            {"SOIM_DISCOVERY": "pigeon"},
            "soim: SOIM_DISCOVERY: must be mdns, seeds or both, got 'pigeon'",
        ),
        ([], {}, "soim: the full-screen client needs a terminal; use --plain"),
    ]
    for args, env, message in cases:
        plain = [] if not args and not env else ["--plain"]
        done = subprocess.run(
            [*SOIM, *plain, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            timeout=20,
        )
        assert done.returncode == 2, (args, env, done.stderr)
        assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
        assert done.stdout == ""
