"""The message pane and the notifications, without a cluster: a frame of a conversation with
100,000 loaded messages draws only its visible rows (the time of a frame is printed), date lines
and the "new messages" line sit where they belong; the bell rings for a message not on screen
unless its conversation is muted — a mention of me rings even then — and mutes are kept in a
0600 file per account."""

from __future__ import annotations

import io
import stat
import time
from pathlib import Path

from blessed import Terminal

from schema import client_pb2
from tui.app_input import LineEditor
from tui.app_state import Model
from tui.commands import Target
from tui.notify import BELL, Mutes, Notifier
from tui.render_screen import frame, pane_lines

DAY_MS = 86_400_000
TOTAL = 100_000


def model_with(total: int, read: int) -> Model:
    """Me (uid 1) and bob (uid 2): `total` messages, the last two of today, the rest of three
    days ago; the conversation open, opened with `read` read."""
    model = Model()
    model.me = client_pb2.LoginReply(user_id=1, account="me")
    entry = model.ensure(7, Target(2), "bob")
    now = int(time.time() * 1000)
    for seq in range(1, total + 1):
        ts = now - 60_000 if seq > total - 2 else now - 3 * DAY_MS + seq
        model.add_message(
            client_pb2.ChatMessage(
                conv_id=7,
                seq=seq,
                sender=2,
                to_user=1,
                sender_account="bob",
                body=f"m{seq}",
                ts_ms=ts,
            )
        )
    entry.read_seq = read
    model.open_conv = 7
    model.thread(7).unread_from = read + 1
    return model


def test_a_frame_of_100000_messages_draws_only_what_shows() -> None:
    term = Terminal(kind="xterm-256color", force_styling=True)
    model = model_with(TOTAL, TOTAL - 3)
    started = time.perf_counter()
    drawn = frame(term, model, LineEditor(), 0)
    took = time.perf_counter() - started
    print(f"\none frame of a conversation with {TOTAL:,} loaded messages: {took * 1000:.1f} ms")
    assert not drawn.at_top and "m100000" in drawn.text
    lines, complete = pane_lines(term, model, 60, 8)
    assert not complete and len(lines) < 12
    plain = [term.strip_seqs(line).strip() for line in lines]
    assert plain[-1].endswith("bob: m100000")
    assert "today" in plain[-3] and "new messages" in plain[-5]
    assert plain[-4].endswith("bob: m99998") and plain[-4][2] == "-"  # MM-DD HH:MM


def test_bell_title_and_mutes(tmp_path: Path) -> None:
    out = io.StringIO()
    path = tmp_path / "muted.json"
    mutes = Mutes(path)
    mutes.load("me", 1)
    notifier = Notifier(out, mutes)
    model = model_with(3, 3)
    model.ensure(9, Target(5, group=True), "devs").last_seq = 4
    plain = client_pb2.ChatMessage(conv_id=9, seq=4, sender=3, to_group=5, body="hi")
    mention = client_pb2.ChatMessage(
        conv_id=9, seq=5, sender=3, to_group=5, body="@me", mentions=[1]
    )
    notifier.arrived(model, plain)
    assert out.getvalue() == BELL
    assert notifier.update_title(model) == "so-im (4)"
    notifier.arrived(model, client_pb2.ChatMessage(conv_id=7, seq=4, sender=2))  # on screen
    assert out.getvalue().count(BELL) == 1 + 1  # the title's terminator

    mutes.set(9, True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Mutes(path)
    again.load("me", 1)
    assert again.convs == {9}
    assert not notifier.wants_bell(model, plain) and notifier.wants_bell(model, mention)
    assert notifier.update_title(model) == "so-im"
    model.add_message(mention)  # an unread mention counts, muted or not
    assert notifier.update_title(model) == "so-im (5)"
    mutes.set(9, False)
    assert notifier.wants_bell(model, plain)
