"""soimctl's user administration on a real cluster: `users` sees the users of every router,
`user list`, `user passwd` (stdin, never the command line) and `user delete`."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fabric.methods import RpcError
from schema import client_pb2
from schema import common_pb2 as pb
from tests.harness import Cluster, running_cluster
from tests.processes import ROOT
from tui.session import ClientSession, EventKind

PASSWORD = "correct horse"


async def soimctl(cluster: Cluster, *args: str, stdin: bytes = b"") -> tuple[int, Any]:
    """Run `soimctl ARGS --json` (stdin not a terminal); its exit status and parsed JSON."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.soimctl",
        *args,
        "--json",
        cwd=ROOT,
        env={**os.environ, **cluster.env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate(stdin)
    assert out, err.decode()
    return proc.returncode or 0, json.loads(out)


@pytest.mark.timeout(60)
def test_users_lists_the_users_of_every_router(tmp_path: Path, cluster_name: str) -> None:
    """Online users spread over two routers; each of several `soimctl users` (run at once, so
    each view settles while the others' admissions come in) lists all of them."""

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await cluster.start_all(routers=2)
            names = [f"user{i}" for i in range(8)]
            for name in names:
                await (await cluster.client()).register(name, PASSWORD)
            runs = await asyncio.gather(*(soimctl(cluster, "users") for _ in range(8)))
            for status, listing in runs:
                assert status == 0
                assert sorted(u["account"] for u in listing["users"]) == names

    asyncio.run(main())


async def soimctl_on_terminal(cluster: Cluster, *args: str, typed: list[str]) -> tuple[int, str]:
    """Run `soimctl ARGS --json` with a terminal as stdin, typing each line of `typed` when
    the previous output ends in a question; its exit status and stdout."""
    leader, follower = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.soimctl",
        *args,
        "--json",
        cwd=ROOT,
        env={**os.environ, **cluster.env},
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=follower,
        start_new_session=True,
    )  # no controlling tty: getpass uses stdin
    os.close(follower)
    try:
        async with asyncio.timeout(30):
            for line in typed:
                prompt = b""
                while not prompt.rstrip().endswith((b":", b"]")):
                    prompt += await _read(leader)
                os.write(leader, line.encode() + b"\n")
            out, _ = await proc.communicate()
    finally:
        os.close(leader)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode()


async def _read(fd: int) -> bytes:
    """What the terminal's other side wrote next (without a thread that could outlive us)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return os.read(fd, 1024)


async def _session_ended(client: ClientSession) -> str:
    """Wait for the client's NOTICE_SESSION_ENDED; its text."""
    async with asyncio.timeout(10):
        while True:
            event = await client.events.get()
            if (
                event.kind is EventKind.PUSH
                and event.push is not None
                and event.push.notice.kind == client_pb2.NOTICE_SESSION_ENDED
            ):
                return event.push.notice.text


@pytest.mark.timeout(60)
def test_user_list_passwd_and_delete(tmp_path: Path, cluster_name: str) -> None:
    """list pages every account in name order; passwd takes the password from stdin only and
    ends the sessions; delete removes the account, its friendship and membership, hands its
    group over, ends its session, frees its name, and its messages read as from deleted#ID."""

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await cluster.start_all()
            alice, bob, carol = [await cluster.client() for _ in range(3)]
            a = (await alice.register("alice", PASSWORD)).user_id
            b = (await bob.register("bob", PASSWORD, nickname="Bobby")).user_id
            await carol.register("carol", PASSWORD)
            await alice.add_friend(b)
            conv = (await bob.add_friend(a)).conv_id
            group = (await bob.group_create("bobs-room")).group.group_id
            await alice.group_join(group)
            await bob.send("hi alice", to_user=a)

            status, listing = await soimctl(cluster, "user", "list")
            assert status == 0
            assert [(u["account"], u["nickname"], u["disabled"]) for u in listing["users"]] == [
                ("alice", "alice", False),
                ("bob", "Bobby", False),
                ("carol", "carol", False),
            ]
            assert all(u["created_ms"] > 0 and u["last_active_ms"] > 0 for u in listing["users"])
            _, only = await soimctl(cluster, "user", "list", "--prefix", "ca")
            assert [u["account"] for u in only["users"]] == ["carol"]

            # passwd: never on the command line, stdin only when asked for, else a terminal
            status, refused = await soimctl(cluster, "user", "passwd", "carol")
            assert (status, refused["error"]) == (1, "INVALID_ARGUMENT")
            status, out = await soimctl_on_terminal(
                cluster, "user", "passwd", "carol", typed=["a new secret", "a new secreT"]
            )
            assert (status, json.loads(out)["error"]) == (1, "INVALID_ARGUMENT")
            status, out = await soimctl_on_terminal(
                cluster, "user", "passwd", "carol", typed=["a new secret", "a new secret"]
            )
            assert (status, json.loads(out)["account"]) == (0, "carol")
            assert "password" in await _session_ended(carol)
            status, changed = await soimctl(
                cluster, "user", "passwd", "carol", "--password-stdin", stdin=b"a newer secret\n"
            )
            assert (status, changed["account"]) == (0, "carol")
            await (await cluster.client()).login("carol", "a newer secret")
            for old in (PASSWORD, "a new secret"):
                with pytest.raises(RpcError):
                    await (await cluster.client()).login("carol", old)

            # delete: refused without --yes off a terminal, then done
            status, refused = await soimctl(cluster, "user", "delete", "bob")
            assert (status, refused["error"]) == (1, "INVALID_ARGUMENT")
            status, _ = await soimctl_on_terminal(cluster, "user", "delete", "bob", typed=["n"])
            assert status == 1
            status, deleted = await soimctl(cluster, "user", "delete", "bob", "--yes")
            assert status == 0
            assert (
                deleted["user_id"],
                deleted["account"],
                deleted["friendships"],
                deleted["groups_left"],
                deleted["groups_handed_over"],
            ) == (b, "bob", 1, 1, [group])
            assert "deleted" in await _session_ended(bob)
            with pytest.raises(RpcError) as err:
                await (await cluster.client()).login("bob", PASSWORD)
            assert err.value.code == pb.BAD_CREDENTIALS
            assert not (await alice.friends()).friends
            room = (await alice.group_search("bobs")).groups[0]
            assert (room.owner, room.members) == (a, 1)
            history = await alice.history(conv)
            assert [(m.sender, m.sender_account, m.body) for m in history.messages] == [
                (b, f"deleted#{b}", "hi alice")
            ]
            _, listing = await soimctl(cluster, "user", "list")
            assert [u["account"] for u in listing["users"]] == ["alice", "carol"]
            again = await (await cluster.client()).register("bob", PASSWORD)
            assert again.user_id != b
            status, gone = await soimctl(cluster, "user", "delete", "999999", "--yes")
            assert (status, gone["error"]) == (1, "NOT_FOUND")

    asyncio.run(main())
