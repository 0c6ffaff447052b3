"""docs/sdk.md's echo bot, read from the doc itself and run as written against a cluster of real
node processes: one bot given a gateway with --server (registering its account on first run),
one finding the gateway by zeroconf (logging in to an account a friend request already waits
for); both with the gateway key as `soim` finds it (SOIM_KEYS_DIR). A user on a
`ClientSession` befriends them, sends each a message and waits for the echo (a reply to it),
and the second bot, invited into a group, echoes a group message. Ctrl-C ends each bot
cleanly. A doc edit that breaks its own example fails here."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from schema import client_pb2
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until
from tests.tui.terminal import ROOT
from tui.session import ClientSession, EventKind

SDK = ROOT / "docs" / "sdk.md"
PASSWORD = "correct horse"
WAIT_S = 20.0


def echo_bot_source() -> str:
    """The first ```python block of the section "A complete echo bot", as written."""
    text = SDK.read_text(encoding="utf-8")
    section = text[text.index("## A complete echo bot") :]
    return section.split("```python\n", 1)[1].split("\n```\n", 1)[0] + "\n"


class Bot:
    """echo_bot.py run as a subprocess, as the doc says to run it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, script: Path, cluster: Cluster, *args: str) -> Bot:
        env = {
            **os.environ,
            "SOIM_CLUSTER": cluster.env["SOIM_CLUSTER"],
            "SOIM_KEYS_DIR": cluster.env["SOIM_KEYS_DIR"],
            "ECHO_BOT_PASSWORD": PASSWORD,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-X",
            "faulthandler",  # a SIGABRT prints every thread's stack (see `stop`)
            str(script),
            *args,
            cwd=script.parent,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def logged_in(self) -> int:
        """The bot's user id, from the line it prints once logged in."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(WAIT_S):
            while line := (await self.proc.stdout.readline()).decode():
                if m := re.fullmatch(r"echo-bot: logged in as \S+ \(uid (\d+)\)\n", line):
                    return int(m[1])
        raise AssertionError(f"the bot exited: {await self.stop()}")

    async def stop(self) -> tuple[int | None, str]:
        """Ctrl-C; its exit status and stderr. A bot still running WAIT_S later fails the test
        with the stack of each of its threads."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        assert self.proc.stderr is not None
        try:
            async with asyncio.timeout(WAIT_S):
                err = (await self.proc.stderr.read()).decode()
                return await self.proc.wait(), err
        except TimeoutError:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler writes the stacks, then it dies
            async with asyncio.timeout(WAIT_S):
                err = (await self.proc.stderr.read()).decode()
            raise AssertionError(f"the bot ignored Ctrl-C for {WAIT_S:g} s:\n{err}") from None


async def next_message(
    session: ClientSession, wanted: Callable[[client_pb2.ChatMessage], bool]
) -> client_pb2.ChatMessage:
    """The first message on `session.events` that is `wanted` (others are passed over)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            event = await session.events.get()
            msg = event.message
            if event.kind is EventKind.MESSAGE and msg is not None and wanted(msg):
                return msg


async def befriended(alice: ClientSession, bot: int) -> int:
    """Our conversation, once the bot accepted."""

    async def conv() -> int:
        for friend in (await alice.friends()).friends:
            if friend.user_id == bot and friend.state == client_pb2.FRIEND_STATE_ACCEPTED:
                return friend.conv_id
        return 0

    return await async_wait_until(conv, timeout=WAIT_S, what="the bot accepted")


async def echoed(
    alice: ClientSession, bot: int, text: str, to_user: int = 0, to_group: int = 0
) -> None:
    """Send `text`; the bot answers it with the same text, as a reply to it."""
    ack = await alice.send(text, to_user=to_user, to_group=to_group)
    echo = await next_message(alice, lambda m: m.sender == bot and m.conv_id == ack.conv_id)
    assert (echo.body, echo.ref_seq, echo.seq) == (text, ack.seq, ack.seq + 1)


@pytest.mark.timeout(90)
def test_the_echo_bot_of_the_sdk_docs_answers(tmp_path: Path, cluster_name: str) -> None:
    script = tmp_path / "bot" / "echo_bot.py"
    script.parent.mkdir()
    script.write_text(echo_bot_source(), encoding="utf-8")

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await cluster.start_all()
            endpoint, _ = cluster.gateways()[0]
            alice = await cluster.client()
            await alice.register("alice", PASSWORD)
            waiting = await cluster.client()  # echo2 exists, with alice's request waiting
            echo2 = (await waiting.register("echo2", PASSWORD)).user_id
            await alice.add_friend(echo2)
            await waiting.close(logout=True)

            bots = [await Bot.start(script, cluster, "echo", "--server", endpoint)]
            echo = await bots[0].logged_in()
            bots.append(await Bot.start(script, cluster, "echo2"))  # zeroconf
            assert await bots[1].logged_in() == echo2
            try:
                await alice.add_friend(echo)
                await befriended(alice, echo)
                await echoed(alice, echo, "hello echo", to_user=echo)
                await befriended(alice, echo2)
                await echoed(alice, echo2, "hello echo2", to_user=echo2)
                group = (await alice.group_create("echoes")).group.group_id
                await alice.call(
                    "GroupInvite", client_pb2.GroupInviteRequest(group_id=group, user_id=echo2)
                )
                await joined(alice, group)
                await echoed(alice, echo2, "hello group", to_group=group)
            finally:
                stopped = [await bot.stop() for bot in bots]
            for status, err in stopped:
                assert status == 0 and "Traceback" not in err, err

    asyncio.run(main())


async def joined(alice: ClientSession, group: int) -> None:
    """Until the bot joined the group it was invited to."""

    async def two() -> bool:
        return len((await alice.group_users(group)).members) == 2

    await async_wait_until(two, timeout=WAIT_S, what="the bot joined")
