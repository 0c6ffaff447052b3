"""`soim`: the blessed full-screen chat client.

Role: the event loop side of the client. Keys are read with `inkey(timeout=0)` from a reader
registered on the asyncio loop (never a blocking read, never a thread); SIGWINCH redraws for
the new size. Lines starting with '/' are commands (`tui.commands`), run one at a time; other
lines go to the open conversation through an outbox that sends one message at a time, so they
are stored in the order typed. Session events (messages, receipts, presence, notices,
reconnects) update the `Model`; every change schedules one redraw (`tui.render_screen`). What
the open conversation shows is marked read. While text is typed for the open conversation its
others are told every TYPING_EVERY_S; their typing shows in its title for TYPING_SHOW_S.
Peer sockets: those of its `ClientSession`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Coroutine
from typing import Any, TextIO

from blessed import Terminal

from fabric.methods import RpcError
from schema import client_pb2
from tui import command_results as results
from tui import commands, grammar, render_screen
from tui.app_input import Action, LineEditor, key_action
from tui.app_state import Model
from tui.commands import Target
from tui.completion import Completer, Names
from tui.known_keys import known_gateways_path
from tui.message_search import Searches, around, hit_seq
from tui.notify import FILE_NAME as MUTES_FILE
from tui.notify import Mutes, Notifier
from tui.palette import DEFAULT_PALETTE, Palette
from tui.render_text import entry_host, result_lines
from tui.session import ClientEvent, ClientSession, EventKind

PAGE = 50
LOCAL = frozenset({"jump", "mute", "unmute"})
"""Commands the app answers itself (and `search --more`, see `_run_commands`)."""
COUNTS_EVERY_S = 2.0
TYPING_EVERY_S = 3.0
"""While I type, the open conversation's others are told this often …"""
TYPING_SHOW_S = 5.0
"""… and show "is typing" this long after each notice."""
NOTICES = {
    client_pb2.NOTICE_FRIEND_REQUEST: "{who} asks to be your friend — /add {account} accepts",
    client_pb2.NOTICE_FRIEND_ACCEPTED: "{who} accepted: you are friends now",
    client_pb2.NOTICE_REDIRECT: "the cluster moves you to {where}",
    client_pb2.NOTICE_GOING_AWAY: "the gateway is stopping; reconnecting…",
}
REFRESHING = frozenset(
    {
        client_pb2.NOTICE_FRIEND_REQUEST,
        client_pb2.NOTICE_FRIEND_ACCEPTED,
        client_pb2.NOTICE_FRIEND_REMOVED,
        client_pb2.NOTICE_GROUP_REMOVED,
        client_pb2.NOTICE_GROUP_OWNER,
    }
)
"""Notices after which the friends, groups and conversations are fetched again."""
INTRO = [
    "so-im — connected to {where}",
    "log in:    /login -u ACCOUNT -p PASSWORD",
    "new here:  /register -u ACCOUNT -p PASSWORD [-n NICKNAME]",
    "/help lists every command, /help COMMAND shows one; Tab completes names",
    "Tab on an empty line switches conversation; PgUp scrolls back",
]


class App:
    """One full-screen client on one terminal."""

    def __init__(
        self,
        session: ClientSession,
        term: Terminal,
        out: TextIO,
        mutes: Mutes | None = None,
        bell: bool = True,
        title: bool = True,
        palette: Palette = DEFAULT_PALETTE,
    ) -> None:
        self.session = session
        self.term = term
        self.palette = palette
        self.out = out
        self.mutes = mutes or Mutes(None)
        self.notifier = Notifier(out, self.mutes, bell, title)
        self.searches = Searches()
        self._status_timer: asyncio.TimerHandle | None = None
        self.model = Model()
        self.model.endpoint = session.endpoint
        self.editor = LineEditor()
        self.names = Names()
        self.completer = Completer(self.names, grammar.USAGES)
        self.scroll = 0
        self._at_top = False
        self._clear = True
        self._draw_scheduled = False
        self._commands: asyncio.Queue[tuple[str, Target | None, int]] = asyncio.Queue()
        self._views = 0  # how many times the open view changed
        self._outbox: asyncio.Queue[tuple[int, Target, str, str]] = asyncio.Queue()
        self._done = asyncio.Event()
        self._typing_next = 0.0  # when the next typing notice may go
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refreshing: asyncio.Task[None] | None = None
        self._refresh_again = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        fd = sys.stdin.fileno()
        self.model.log([line.format(where=entry_host(self.session.endpoint)) for line in INTRO])
        if self.session.user is not None:  # the remembered login, resumed at start
            self._show(results.LoggedIn(self.session.user, self.session.endpoint), self._views)
        workers = [
            asyncio.ensure_future(job)
            for job in (self._run_commands(), self._send_outbox(), self._events(), self._tick())
        ]
        signals = {
            signal.SIGWINCH: self._resized,
            signal.SIGINT: self.quit,
            signal.SIGTERM: self.quit,
            signal.SIGHUP: self.quit,
        }
        with self.term.fullscreen(), self.term.cbreak():
            loop.add_reader(fd, self._on_keys)
            for sig, handler in signals.items():
                loop.add_signal_handler(sig, handler)
            self._on_keys()  # keys typed before start: blessed may hold them already
            try:
                await self._done.wait()
            finally:
                loop.remove_reader(fd)
                for sig in signals:
                    loop.remove_signal_handler(sig)
                for task in [*workers, *self._tasks]:
                    task.cancel()
                await asyncio.gather(*workers, *self._tasks, return_exceptions=True)
        return 0

    def quit(self) -> None:
        self._done.set()

    # ---- drawing
    def invalidate(self) -> None:
        """Something changed: draw once, soon (many changes in one loop pass, one frame)."""
        if not self._draw_scheduled:
            self._draw_scheduled = True
            asyncio.get_running_loop().call_soon(self._draw)

    def _resized(self) -> None:
        self._clear = True
        self.invalidate()

    def _draw(self) -> None:
        self._draw_scheduled = False
        if self._done.is_set():  # the screen is being handed back to the shell
            return
        frame = render_screen.frame(self.term, self.model, self.editor, self.scroll, self.palette)
        self.scroll, self._at_top = frame.scroll, frame.at_top
        self.out.write((self.term.clear if self._clear else "") + frame.text)
        if self.model.me is not None:
            self.notifier.update_title(self.model)
        self.out.flush()
        self._clear = False
        expires = self.model.status_expires_in()
        if expires > 0 and self._status_timer is None:  # blank the status line when due
            self._status_timer = asyncio.get_running_loop().call_later(expires, self._expired)

    def _expired(self) -> None:
        self._status_timer = None
        self.invalidate()

    # ---- keys
    def _on_keys(self) -> None:
        """The stdin reader: handle every key already typed, without waiting for more."""
        before = self.editor.text
        try:
            while key := self.term.inkey(timeout=0, esc_delay=0):
                self._on_action(key_action(key, self.editor))
        except EOFError:  # the terminal is gone
            self.quit()
        if self.editor.text != before and self.editor.text.strip()[:1] not in ("", "/"):
            self._typing()
        self.invalidate()

    def _typing(self) -> None:
        """Text is being typed for the open conversation: tell its others (every few s)."""
        now = time.monotonic()
        if self.model.open_conv in self.model.entries and now >= self._typing_next:
            self._typing_next = now + TYPING_EVERY_S
            self._spawn(self._tell_typing(self.model.open_conv))

    async def _tell_typing(self, conv_id: int) -> None:
        with contextlib.suppress(RpcError):  # best effort: nothing to show if it fails
            await self.session.typing(conv_id)

    def _on_action(self, action: Action) -> None:
        match action:
            case Action.SUBMIT:
                self._submit()
            case Action.PAGE_UP:
                if self._at_top:
                    self._spawn(self._load_page(self.model.open_conv, newer=False))
                self.scroll += self._page()
            case Action.PAGE_DOWN:
                if self.scroll == 0 and self.model.thread(self.model.open_conv).newer_missing:
                    self._spawn(self._load_page(self.model.open_conv, newer=True))
                self.scroll = max(0, self.scroll - self._page())
            case Action.NEXT if self.editor.text.strip():
                self._complete()
            case Action.NEXT | Action.PREVIOUS:
                order = [0, *(e.conv_id for e in self.model.sidebar())]
                here = order.index(self.model.open_conv) if self.model.open_conv in order else 0
                step = 1 if action is Action.NEXT else -1
                self._open(order[(here + step) % len(order)])
            case Action.QUIT:
                self.quit()

    def _page(self) -> int:
        return max(self.term.height - 5, 1)

    def _complete(self) -> None:
        """Tab on a line being typed: complete the word before the cursor; the candidates
        show on the status line when there are several (Tab again: the next)."""
        editor = self.editor
        editor.text, editor.cursor, candidates = self.completer.complete(editor.text, editor.cursor)
        if len(candidates) > 1:
            self.model.say("  ".join(candidates))

    def _submit(self) -> None:
        line = self.editor.text.strip()
        secret = line.startswith(("/login", "/register", "/passwd", "/delete-account"))
        self.editor.submit(remember=not secret)
        if line.startswith("/"):
            self.model.log(["", f"> {render_screen.masked(line)}"])
            if not self._open_known(line[1:]):
                entry = self.model.entries.get(self.model.open_conv)
                self._commands.put_nowait((line[1:], entry.target if entry else None, self._views))
        elif line:
            self._say(line)

    def _open_known(self, line: str) -> bool:
        """`/open` of a conversation in the sidebar switches at once, before any command still
        running finishes — so the text typed right after it goes there."""
        try:
            cmd = commands.parse(line)
            word = cmd.args["TARGET"] if cmd.name == "open" else ""
            entry = (
                self.model.entry_of(self.names.target(word) or commands.target(word))
                if cmd.name == "open"
                else None
            )
        except commands.CommandError:
            return False
        if entry is None:
            return False
        self.model.log(result_lines(results.Opened(entry.target, entry.conv_id, entry.title)))
        self._open(entry.conv_id)
        return True

    def _say(self, body: str) -> None:
        """Plain text: to the open conversation, via the outbox."""
        entry = self.model.entries.get(self.model.open_conv)
        if entry is None:
            self.model.say(
                "open a conversation first: Tab, or /open NAME or /open #GROUP", error=True
            )
            return
        msg_id = uuid.uuid4().hex
        self.model.add_pending(entry.conv_id, msg_id, body)
        self._outbox.put_nowait((entry.conv_id, entry.target, msg_id, body))
        self.scroll = 0

    # ---- commands and sends
    async def _run_commands(self) -> None:
        while True:
            line, current, views = await self._commands.get()
            try:
                cmd = commands.parse(line)
            except commands.CommandError as err:
                self._show(results.Failure(str(err), err.usage), views)
                continue
            msg_id = uuid.uuid4().hex if cmd.name in commands.SENDS else ""
            if cmd.name in LOCAL or (cmd.name == "search" and cmd.args["--more"]):
                self._show(await self._local(cmd, current), views)
            else:
                self._show(await commands.execute(cmd, self.session, current, msg_id), views)

    async def _local(self, cmd: commands.Command, current: Target | None) -> results.Result:
        """The commands this client answers itself: further search pages, jumps, mutes."""
        try:
            if cmd.name == "search":
                return await self.searches.next_page(self.session)
            if cmd.name == "jump":
                return await self._jump(self.searches.hit(cmd.args["N"]))
            word = cmd.args["TARGET"]
            to = (
                (self.names.target(word) or await commands.resolve(self.session, word))
                if word
                else current
            )
            entry = self.model.entry_of(to) if to is not None else None
            if entry is None:
                return results.Failure(f"{cmd.name} what? open a conversation or name one")
            self.mutes.set(entry.conv_id, cmd.name == "mute")
            return results.Info(f"{entry.title}: {cmd.name}d")
        except commands.CommandError as err:
            return results.Failure(str(err), err.usage)
        except RpcError as err:
            return results.Failure(commands.humanise(err))

    async def _jump(self, hit: client_pb2.ChatMessage) -> results.Result:
        """Open a search result's conversation at the result (a page around it)."""
        entry = self.model.entries.get(hit.conv_id)
        if entry is None:
            return results.Failure("that conversation is no longer in your list")
        page = await around(self.session, hit, PAGE)
        thread = self.model.thread(hit.conv_id)
        thread.reset(list(page.messages))
        thread.fetched, thread.newer_missing = True, page.more
        self._open(hit.conv_id)
        thread.marked, self.scroll = hit_seq(hit), 1 << 30  # the top of the page: the result
        return results.Info(f"{entry.title}: message {hit_seq(hit)}")

    async def _send_outbox(self) -> None:
        while True:
            conv_id, target, msg_id, body = await self._outbox.get()
            try:
                sent = await commands.send(self.session, target, body, msg_id)
            except RpcError as err:
                self.model.failed(conv_id, msg_id, commands.humanise(err))
                self.model.say(commands.humanise(err), error=True)
            else:
                self.model.acked(target, sent.ack, body, mentions=sent.mentions)
                self._after_messages(conv_id)
            self.invalidate()

    def _show(self, result: results.Result, views: int) -> None:
        """Apply a command's result to the screen; `views` counted view changes when it was
        typed (a table shows the console only if the user has not moved on since)."""
        if isinstance(result, results.LoggedIn | results.LoggedOut):  # a new model
            console, self.model = self.model.console, Model()
            self.model.console = console
        if isinstance(result, results.LoggedIn):
            self.mutes.load(result.reply.account, result.reply.user_id)
            self.model.muted = self.mutes.convs
        if isinstance(result, results.Found):
            self.searches.saw(result)
        if not isinstance(result, results.History):  # history shows in its conversation
            self.model.log(result_lines(result))
        if isinstance(result, results.Table):
            self.names.saw_table(result)
        elif isinstance(result, results.LoggedIn):
            self.names.clear()
        match result:
            case results.LoggedIn(reply=reply, endpoint=endpoint):
                self.model.me, self.model.endpoint = reply, endpoint
                self.model.say(f"logged in as {reply.account} (uid {reply.user_id})")
                self._refresh()
            case results.Failure(text=text, usage=usage):
                self.model.say(text, error=True)
                self.model.log(usage.splitlines())
            case results.Info(text=text):  # a friend or group changed
                self.model.say(text)
                self._refresh()
            case results.Sent(ack=ack, target=target, body=body):
                self.model.say(f"sent to {target.label}")
                if ack.conv_id not in self.model.entries:
                    self._refresh()
                self.model.acked(target, ack, body, result.kind, result.ref_seq, result.mentions)
            case results.Opened(target=target, conv_id=conv_id, title=title):
                self.model.ensure(conv_id, target, title)
                self._open(conv_id)
            case results.History(conv_id=conv_id, messages=messages):
                for msg in messages:
                    self.model.add_message(msg)
                self.model.say(f"{len(messages)} messages loaded")
                self._open(conv_id)
            case results.Bye():
                self.quit()
            case _ if views == self._views:  # tables and help: show the console
                self._open(0)
        self.invalidate()

    # ---- conversations
    def _open(self, conv_id: int) -> None:
        """Show a conversation (0: the console); the first time, fetch its newest page."""
        self.model.open_conv, self.scroll = conv_id, 0
        self._views += 1
        entry = self.model.entries.get(conv_id)
        if entry is None:
            return
        thread = self.model.thread(conv_id)
        thread.unread_from = entry.read_seq + 1 if entry.unread else 0
        thread.marked = 0
        if not thread.fetched:
            thread.fetched = True
            self._spawn(self._load_newest(conv_id))
        self._after_messages(conv_id)
        if self.model.entries[conv_id].target.group:
            self._refresh()  # its member count: a join is not pushed to the other members

    async def _load_newest(self, conv_id: int) -> None:
        try:
            page = await commands.newest(self.session, conv_id, PAGE)
        except RpcError:
            self.model.thread(conv_id).fetched = False  # try again at the next open
            raise
        for msg in page.messages:
            self.model.add_message(msg)
        self._after_messages(conv_id)

    async def _load_page(self, conv_id: int, newer: bool) -> None:
        """Page Up at the top: the page before the oldest message loaded; Page Down at the
        bottom of a page a search jumped to: the page after the newest."""
        thread = self.model.thread(conv_id)
        edge = thread.newest if newer else thread.oldest
        if (
            conv_id not in self.model.entries
            or thread.loading
            or not (thread.newer_missing if newer else edge > 1)
        ):
            return
        thread.loading = True
        try:
            page = await (
                self.session.history(conv_id, after_seq=edge, limit=PAGE)
                if newer
                else self.session.history(conv_id, before_seq=edge, limit=PAGE)
            )
        finally:
            thread.loading = False
        for msg in page.messages:
            self.model.add_message(msg)
        if newer:
            thread.newer_missing = page.more
            self._after_messages(conv_id)
        self.model.say(f"{len(page.messages)} {'newer' if newer else 'older'} messages loaded")
        self.invalidate()

    def _after_messages(self, conv_id: int) -> None:
        """New messages in a conversation: if it is open, they are read; groups: counts."""
        entry = self.model.entries.get(conv_id)
        if entry is None or conv_id != self.model.open_conv:
            return
        newest = self.model.thread(conv_id).newest
        if newest > entry.read_seq:
            entry.read_seq = newest
            self._spawn(self.session.read(conv_id, newest))
        if entry.target.group:
            self._spawn(self._load_counts(conv_id))
        self.invalidate()

    async def _load_counts(self, conv_id: int) -> None:
        mine = self.model.my_seqs(conv_id)
        if not mine:
            return
        high = mine[-1]
        low = max(mine[0], high - 99)
        self.model.set_counts(await self.session.group_read_counts(conv_id, low, high))
        self.invalidate()

    async def _tick(self) -> None:
        """Group read counts are fetched, not pushed: refresh those of the open group."""
        while True:
            await asyncio.sleep(COUNTS_EVERY_S)  # the refresh period
            entry = self.model.entries.get(self.model.open_conv)
            if entry is not None and entry.target.group and self.model.connected:
                with contextlib.suppress(RpcError):
                    await self._load_counts(entry.conv_id)

    # ---- the sidebar
    def _refresh(self) -> None:
        """Fetch friends, groups and conversation state again (one fetch at a time)."""
        if self._refreshing is not None and not self._refreshing.done():
            self._refresh_again = True
            return
        self._refreshing = self._spawn(self._refresh_all())

    async def _refresh_all(self) -> None:
        while self.model.me is not None:
            self._refresh_again = False
            friends = list((await self.session.friends()).friends)
            groups = list((await self.session.groups()).groups)
            self.names.saw_friends(friends)
            self.names.saw_groups(groups)
            self.model.set_friends(friends)
            self.model.set_groups(groups)
            self.invalidate()
            self.model.apply_sync(list((await self.session.sync()).conversations))
            self._after_messages(self.model.open_conv)
            self.invalidate()
            if not self._refresh_again:
                return

    # ---- session events
    async def _events(self) -> None:
        while True:
            self._on_event(await self.session.events.get())
            self.invalidate()

    def _on_event(self, event: ClientEvent) -> None:
        model = self.model
        if event.kind is EventKind.MESSAGE and event.message is not None:
            self.names.saw_user(event.message.sender_account, event.message.sender)
            self.notifier.arrived(model, event.message)
            if model.add_message(event.message):
                self._refresh()
            self._after_messages(event.message.conv_id)
        elif event.kind is EventKind.DISCONNECTED:
            model.connected = False
            model.say("connection lost; reconnecting…", error=True)
        elif event.kind is EventKind.RECONNECTED:
            model.connected, model.endpoint = True, event.endpoint
            model.say(f"reconnected to {entry_host(event.endpoint)}")
            self._refresh()
        elif event.kind is EventKind.REDIRECTED:
            model.connected, model.endpoint = True, event.endpoint
            model.say(f"moved to {entry_host(event.endpoint)}")
            self._refresh()
        elif event.push is not None:
            self._on_push(event.push)

    def _on_push(self, push: client_pb2.Push) -> None:
        match push.WhichOneof("item"):
            case "receipt":
                self.model.receipt(push.receipt)
            case "presence":
                self.model.set_presence(push.presence.user_id, push.presence.online)
            case "typing":
                t = push.typing
                self.model.set_typing(t.conv_id, t.account, time.monotonic() + TYPING_SHOW_S)
                asyncio.get_running_loop().call_later(TYPING_SHOW_S, self.invalidate)
            case "sync_hint":
                self._refresh()
            case "notice":
                n = push.notice
                text = NOTICES.get(n.kind, "{text}").format(
                    who=f"{n.user.account} (uid {n.user.user_id})",
                    uid=n.user.user_id,
                    account=n.user.account,
                    where=entry_host(n.redirect.endpoint),
                    text=n.text,
                )
                self.model.say(text)
                self.model.log([f"* {text}"])
                if n.kind in REFRESHING:
                    self._refresh()

    # ---- background work
    def _spawn(self, job: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `job` in the background; its RpcError ends up on the status line."""
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if err is not None:
            self.model.say(
                commands.humanise(err) if isinstance(err, RpcError) else f"internal error: {err!r}",
                error=True,
            )
            self.invalidate()


async def run_app(
    session: ClientSession,
    bell: bool = True,
    title: bool = True,
    palette: Palette = DEFAULT_PALETTE,
) -> int:
    """`soim` on this process's terminal; muted conversations are kept next to the other
    files of the soim config dir."""
    mutes = Mutes(known_gateways_path(os.environ).parent / MUTES_FILE)
    return await App(session, Terminal(), sys.stdout, mutes, bell, title, palette).run()
