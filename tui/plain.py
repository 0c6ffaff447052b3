"""`soim --plain`: the so-im commands as a line mode for pipes, scripts and screen readers.

Role: read one command per line from stdin (the same commands as the full-screen client,
without the '/'), run each to completion, print its so-im-style result, and print incoming
messages as `sender: text` between commands. Notices (friend requests, reconnects) are printed
as lines starting with '* '. What it prints is marked read. At end of input, or on `exit`, it
logs out and returns its exit status: 0 when every command worked, 1 when one failed (login
refused, no such user, any refusal), 2 when a line was not a command or did not match its
usage (2 wins over 1); it goes on after a failure, like a shell script.
Peer sockets: those of its `ClientSession`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
from collections.abc import AsyncIterator
from typing import TextIO

from fabric.methods import RpcError
from schema import client_pb2
from tui import command_results as results
from tui import commands
from tui.message_search import Searches
from tui.render_text import entry_host, message_line, result_lines
from tui.session import ClientEvent, ClientSession, EventKind

FAILED = 1
USAGE_ERROR = 2

NOTICES = {
    client_pb2.NOTICE_FRIEND_REQUEST: "{who} asks to be your friend; add {account} accepts",
    client_pb2.NOTICE_FRIEND_ACCEPTED: "{who} accepted your friend request",
}


class PlainClient:
    """One line-mode client: commands in, lines out."""

    def __init__(self, session: ClientSession, out: TextIO) -> None:
        self.session = session
        self.out = out
        self.current: commands.Target | None = None
        self._sent: set[str] = set()  # client_msg_ids sent from here: not echoed back
        self._read: dict[int, int] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.status = 0  # the exit status so far
        self.searches = Searches()  # for search --more

    async def run(self, lines: AsyncIterator[str]) -> int:
        """Run every command of `lines`; return the exit status."""
        events = asyncio.ensure_future(self._events())
        try:
            async for line in lines:
                if line.strip() and not await self.command(line.strip()):
                    break
        finally:
            events.cancel()
            await asyncio.gather(events, *self._background, return_exceptions=True)
        return self.status

    async def command(self, line: str) -> bool:
        """Run one command line and print its result; False after `exit`."""
        try:
            cmd = commands.parse(line)
        except commands.CommandError as err:
            self.write([str(err)])
            self.status = USAGE_ERROR
            return True
        msg_id = os.urandom(16).hex() if cmd.name in commands.SENDS else ""
        self._sent.add(msg_id)  # our own message is not printed when it comes back
        if cmd.name == "search" and cmd.args["--more"]:
            result = await self.searches.next_page(self.session)
        else:
            result = await commands.execute(cmd, self.session, self.current, msg_id)
        if isinstance(result, results.Found):
            self.searches.saw(result)
        if isinstance(result, results.Opened):
            self.current = result.target
        elif isinstance(result, results.Failure):
            self.status = max(self.status, USAGE_ERROR if result.usage else FAILED)
        self.write(result_lines(result))
        return not isinstance(result, results.Bye)

    def write(self, lines: list[str]) -> None:
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()

    async def _events(self) -> None:
        while True:
            self._show(await self.session.events.get())
            if self.session.events.empty():
                self._mark_read()

    def _show(self, event: ClientEvent) -> None:
        if event.kind is EventKind.MESSAGE and event.message is not None:
            msg = event.message
            self._read[msg.conv_id] = max(self._read.get(msg.conv_id, 0), msg.seq)
            if msg.client_msg_id not in self._sent:
                self.write([message_line(msg)])
        elif event.kind is EventKind.DISCONNECTED:
            self.write(["* connection lost; reconnecting"])
        elif event.kind is EventKind.RECONNECTED:
            self.write([f"* reconnected to {entry_host(event.endpoint)}"])
        elif event.kind is EventKind.REDIRECTED:
            self.write([f"* moved to {entry_host(event.endpoint)}"])
        elif event.push is not None and event.push.WhichOneof("item") == "notice":
            notice = event.push.notice
            who = f"{notice.user.account} (uid {notice.user.user_id})"
            text = NOTICES.get(notice.kind, "{text}").format(
                who=who, account=notice.user.account, text=notice.text
            )
            self.write([f"* {text}"])

    def _mark_read(self) -> None:
        """What was printed has been read: one Read per conversation, in the background."""
        read, self._read = self._read, {}
        for conv_id, seq in read.items():
            task = asyncio.ensure_future(self._read_quietly(conv_id, seq))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _read_quietly(self, conv_id: int, seq: int) -> None:
        with contextlib.suppress(RpcError):
            await self.session.read(conv_id, seq)


async def stdin_lines(stream: TextIO) -> AsyncIterator[str]:
    """Lines of `stream` without blocking the loop: a pipe or terminal is read through the
    loop; a regular file (which never blocks) is read directly."""
    if stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
        for line in stream:
            yield line
            await asyncio.sleep(0)  # let pushes print between commands
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), stream
    )
    try:
        while data := await reader.readline():
            yield data.decode("utf-8", errors="replace")
    finally:
        transport.close()


async def run_plain(session: ClientSession) -> int:
    """`soim --plain` on this process's stdin and stdout."""
    client = PlainClient(session, sys.stdout)
    try:
        return await client.run(stdin_lines(sys.stdin))
    except BrokenPipeError:  # whoever read our output has gone (soim --plain | head -1)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
