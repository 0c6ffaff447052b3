"""Draws the full-screen client: header, sidebar, message pane, status line and input line.

Role: turn the `Model` and the `LineEditor` into one frame of terminal output for the current
terminal size (asked of blessed at every frame, so a resize just draws anew). The sidebar lists
friends (● online, ○ offline) and groups (#) with unread counts; the pane shows the open
conversation — time, sender, text, and for my messages the mark (… sending, ✓ sent,
✓✓ delivered, ✓✓ read; groups: read n/m), edited text marked "(edited)", "message recalled",
a reply's quoted excerpt above it, and who is typing in the title — or the console of command
output; in the colours of the config file (`tui.palette`). No sockets.

    ┌ header: me, gateway, connection ───────────────────┐
    │ sidebar │ title of the open conversation           │
    │         │ messages (scrolled from the bottom)      │
    ├ status line ───────────────────────────────────────┤
    └ > input line ──────────────────────────────────────┘
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from blessed import Terminal

from tui import message_view
from tui.app_input import LineEditor
from tui.app_state import Model, Pending
from tui.palette import DEFAULT_PALETTE, Palette
from tui.render_text import entry_host

SIDEBAR_MAX = 28
INDENT = " " * 6
_SECRET = re.compile(
    r"^(\s*/(?:login|register|delete-account)\b.*?-p\s*)"
    r"(\"[^\"]*\"?|'[^']*'?|\S+)"
)  # a quoted password is one word
_PASSWD = re.compile(r"^(\s*/passwd\s)(.*)")


@dataclass(frozen=True)
class Frame:
    """One drawn screen, and the pane's scroll position clamped to what there is."""

    text: str
    scroll: int
    at_top: bool


def frame(
    term: Terminal,
    model: Model,
    editor: LineEditor,
    scroll: int,
    palette: Palette = DEFAULT_PALETTE,
) -> Frame:
    """Everything on screen, as one string to write; `scroll` counts pane rows from the end."""
    width, height = max(term.width, 20), max(term.height, 6)
    side = min(SIDEBAR_MAX, width // 4)
    pane_w = width - side - 1
    rows = height - 4  # header, pane title, status, input
    lines, complete = pane_lines(term, model, pane_w, rows + max(scroll, 0) + 1, palette)
    scroll = max(0, min(scroll, len(lines) - rows))
    shown = lines[max(0, len(lines) - rows - scroll) : len(lines) - scroll]
    out = [
        term.home,
        term.move_xy(0, 0),
        term.reverse(term.ljust(term.truncate(header(model), width), width)),
    ]
    bar = sidebar_lines(term, model, side, palette)
    pane = [term.bold(pane_title(model)), *shown]
    for row in range(rows + 1):
        left = bar[row] if row < len(bar) else ""
        right = pane[row] if row < len(pane) else ""
        out.append(
            term.move_xy(0, row + 1)
            + term.ljust(term.truncate(left, side), side)
            + "│"
            + term.ljust(term.truncate(right, pane_w), pane_w)
        )
    status = term.truncate(model.status, width)
    out.append(
        term.move_xy(0, height - 2)
        + term.ljust(
            palette.paint(term, "error" if model.status_is_error else "status", status), width
        )
    )
    text_x, visible = input_view(editor, width - 2)
    out.append(term.move_xy(0, height - 1) + term.ljust("> " + visible, width))
    out.append(term.move_xy(2 + text_x, height - 1))
    return Frame("".join(out), scroll, at_top=complete and len(lines) - scroll <= rows)


def header(model: Model) -> str:
    if model.me is None:
        return " so-im │ not logged in │ /login -u ACCOUNT -p PASSWORD or /register …"
    link = "online" if model.connected else "reconnecting…"
    return (
        f" so-im │ {model.me.account} (uid {model.me.user_id}) │ "
        f"{entry_host(model.endpoint)} │ {link}"
    )


def sidebar_lines(
    term: Terminal, model: Model, width: int, palette: Palette = DEFAULT_PALETTE
) -> list[str]:
    """'console', then friends and groups with their unread counts; the open one reversed."""
    lines = [_row(term, palette, " console", 0, width, model.open_conv == 0)]
    entries = model.sidebar()
    friends = [e for e in entries if not e.target.group]
    groups = [e for e in entries if e.target.group]
    lines.append(term.bold(" Friends"))
    for e in friends:
        dot = term.green("●") if e.online else "○"
        lines.append(
            _row(
                term,
                palette,
                f" {dot} {e.title}{_muted(model, e.conv_id)}",
                _unread(model, e.conv_id, e.unread),
                width,
                model.open_conv == e.conv_id,
            )
        )
    lines.append(term.bold(" Groups"))
    for e in groups:
        lines.append(
            _row(
                term,
                palette,
                f" # {e.title}{_muted(model, e.conv_id)}",
                _unread(model, e.conv_id, e.unread),
                width,
                model.open_conv == e.conv_id,
            )
        )
    return lines


def _muted(model: Model, conv_id: int) -> str:
    return " (muted)" if conv_id in model.muted else ""


def _unread(model: Model, conv_id: int, unread: int) -> int:
    return 0 if model.open_conv == conv_id else unread


def _row(
    term: Terminal, palette: Palette, label: str, unread: int, width: int, selected: bool
) -> str:
    count = f" {unread} " if unread else ""
    room = max(width - len(count), 1)
    text = term.ljust(term.truncate(label, room), room) + palette.paint(
        term, "unread", term.bold(count) if count else ""
    )
    return term.reverse(text) if selected else text


def pane_title(model: Model) -> str:
    entry = model.entries.get(model.open_conv)
    if entry is None:
        return " console — /help lists the commands; Tab switches conversation"
    if entry.target.group:
        members = model.thread(entry.conv_id).members
        return f" # {entry.title} (g:{entry.target.id}) · {members} members" + _typing(
            model, entry.conv_id
        )
    state = "online" if entry.online else "offline"
    return f" {entry.title} (uid {entry.target.id}) · {state}" + _typing(model, entry.conv_id)


def _typing(model: Model, conv_id: int) -> str:
    """' · bob is typing…' while someone types in the conversation."""
    who = model.typists(conv_id, time.monotonic())
    if not who:
        return ""
    return f" · {', '.join(who)} {'is' if len(who) == 1 else 'are'} typing…"


def pane_lines(
    term: Terminal,
    model: Model,
    width: int,
    need: int = 1 << 62,
    palette: Palette = DEFAULT_PALETTE,
) -> tuple[list[str], bool]:
    """The last lines of the open view, wrapped to `width`: at least `need` of them when there
    are that many (the rest is not drawn at all), and whether they are all there are. A
    conversation shows a date line where the day changes, "new messages" above the first one
    that was unread when it was opened, and the message a search jumped to highlighted."""
    if model.open_conv not in model.entries:
        return [
            palette.paint(term, "notice", w) if line.startswith("* ") else w
            for line in model.console
            for w in (term.wrap(line, width) or [""])
        ], True
    thread = model.thread(model.open_conv)
    me = model.me.user_id if model.me is not None else 0
    account = model.me.account if model.me is not None else "me"
    today = _day(time.time() * 1000)
    tail: list[str] = []
    if thread.newer_missing:
        tail.append(term.dim("  ⇟ PgDn loads newer messages"))
    for p in thread.pending:
        tail += message_lines(
            term,
            p.ts_ms,
            account,
            p.body,
            _pending_mark(term, p),
            width,
            today,
            palette=palette,
            own=True,
        )
    blocks = [tail]
    count, i = len(tail), len(thread.seqs) - 1
    while i >= 0 and count < need:
        msg = thread.messages[thread.seqs[i]]
        if message_view.is_event(msg):  # an edit or recall shows in the message it changes
            i -= 1
            continue
        day = _day(msg.ts_ms)
        block = []
        if i == 0 or _day(thread.messages[thread.seqs[i - 1]].ts_ms) != day:
            block.append(_rule(term, _day_label(day, today), width))
        if msg.seq == thread.unread_from:
            block.append(term.bold_red(_rule(term, "new messages", width)))
        if msg.ref_seq:  # a reply: the excerpt it answers
            block.append(
                term.dim(
                    term.truncate(
                        INDENT + message_view.quote(msg.ref_seq, thread.messages, thread.amends),
                        width,
                    )
                )
            )
        mark = model.mark(msg) if msg.sender == me else ""
        block += message_lines(
            term,
            msg.ts_ms,
            msg.sender_account or str(msg.sender),
            message_view.shown(msg, thread.amends),
            mark,
            width,
            today,
            marked=msg.seq == thread.marked,
            palette=palette,
            own=msg.sender == me,
            mention=message_view.mentions_me(msg, me),
        )
        blocks.append(block)
        count += len(block)
        i -= 1
    if i < 0 and thread.oldest > 1:
        blocks.append([term.dim("  ⇞ PgUp loads older messages")])
    return [line for block in reversed(blocks) for line in block], i < 0


def _day(ts_ms: float) -> tuple[int, int, int]:
    t = time.localtime(ts_ms / 1000)
    return t.tm_year, t.tm_mon, t.tm_mday


def _day_label(day: tuple[int, int, int], today: tuple[int, int, int]) -> str:
    if day == today:
        return "today"
    stamp = time.mktime((*day, 12, 0, 0, 0, 0, -1))
    return time.strftime("%a %d %b %Y", time.localtime(stamp))


def _rule(term: Terminal, label: str, width: int) -> str:
    """`──── label ────` across the pane."""
    text = f" {label} "
    side = max((width - len(text)) // 2, 2)
    return term.dim("─" * side + text + "─" * max(width - side - len(text), 0))


def _pending_mark(term: Terminal, p: Pending) -> str:
    return term.red(f"✗ {p.error}") if p.error else "…"


def message_lines(
    term: Terminal,
    ts_ms: int,
    sender: str,
    body: str,
    mark: str,
    width: int,
    today: tuple[int, int, int] | None = None,
    marked: bool = False,
    palette: Palette = DEFAULT_PALETTE,
    own: bool = False,
    mention: bool = False,
) -> list[str]:
    """'HH:MM sender: text' ('MM-DD HH:MM' on another day of this year, 'YYYY-MM-DD HH:MM'
    of another year), wrapped with a hanging indent, the mark at the right edge; the time,
    the sender (mine or another's) and a text that mentions me in their colours."""
    day, today = _day(ts_ms), today or _day(time.time() * 1000)
    shape = "%H:%M" if day == today else "%m-%d %H:%M" if day[0] == today[0] else "%Y-%m-%d %H:%M"
    when = time.strftime(shape, time.localtime(ts_ms / 1000))
    if marked:
        when = term.reverse(f"▶{when}")
    when = palette.paint(term, "time", when)
    who = palette.paint(term, "own" if own else "other", term.bold(sender))
    body = palette.paint(term, "mention", body) if mention else body
    lines = term.wrap(f"{when} {who}: {body}", width, subsequent_indent=INDENT) or [""]
    if mark:
        used, need = term.length(lines[-1]), term.length(mark)
        if used + 1 + need <= width:
            lines[-1] += " " * (width - used - need) + mark
        else:
            lines.append(" " * max(width - need, 0) + mark)
    return lines


def masked(line: str) -> str:
    """A typed line with the password of /login, /register or /delete-account, and both of
    /passwd, shown as stars."""
    line = _PASSWD.sub(lambda m: m.group(1) + "*" * len(m.group(2)), line)
    return _SECRET.sub(lambda m: m.group(1) + "*" * len(m.group(2)), line)


def input_view(editor: LineEditor, width: int) -> tuple[int, str]:
    """The visible window of the input line (password masked) and the cursor's column in it."""
    text = masked(editor.text)
    start = max(0, editor.cursor - width + 1)
    return editor.cursor - start, text[start : start + width]
