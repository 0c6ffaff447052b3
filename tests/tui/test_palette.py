"""The `[colours]` of config.toml on screen, without a cluster: a frame drawn with the file's
colours shows my name, others' names, times, unread counts, notices and the status line in
them; an element the file leaves out keeps its built-in colour (refusals red, mentions yellow),
and the rest the terminal's own."""

from __future__ import annotations

import time
from pathlib import Path

from blessed import Terminal

from schema import client_pb2
from tests.tui.test_pane import model_with
from tui import config_file
from tui.commands import Target
from tui.palette import DEFAULT_PALETTE, Palette
from tui.render_screen import pane_lines, sidebar_lines

CONFIG = """
[colours]
own = "green"
other = "cyan"
time = "magenta"
unread = "blue"
notice = "white"
status = "yellow"
"""


def test_the_config_files_colours_are_drawn(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    palette = Palette(config_file.load(path).colours)
    term = Terminal(kind="xterm-256color", force_styling=True)
    model = model_with(3, 1)
    model.add_message(
        client_pb2.ChatMessage(
            conv_id=7, seq=4, sender=1, to_user=2, sender_account="me", body="mine", ts_ms=1
        )
    )
    model.add_message(
        client_pb2.ChatMessage(
            conv_id=7,
            seq=5,
            sender=2,
            to_user=1,
            sender_account="bob",
            body="@me",
            mentions=[1],
            ts_ms=2,
        )
    )
    text = "\n".join(pane_lines(term, model, 60, 20, palette)[0])
    assert term.green(term.bold("me")) in text and term.cyan(term.bold("bob")) in text
    assert term.magenta(time.strftime("%Y-%m-%d %H:%M", time.localtime(0.001))) in text
    assert term.yellow("@me") in text  # a mention keeps its built-in colour

    model.ensure(9, Target(5, group=True), "devs").last_seq = 4
    bar = "\n".join(sidebar_lines(term, model, 28, palette))
    assert term.blue(term.bold(" 4 ")) in bar

    model.open_conv = 0
    model.log(["* bob is now your friend", "plain output"])
    console = pane_lines(term, model, 60, 20, palette)[0]
    assert term.white("* bob is now your friend") in console and "plain output" in console
    assert palette.paint(term, "status", "ok") == term.yellow("ok")
    assert palette.paint(term, "error", "No such user") == term.red("No such user")


def test_without_a_colours_table_only_refusals_and_mentions_are_coloured() -> None:
    term = Terminal(kind="xterm-256color", force_styling=True)
    assert DEFAULT_PALETTE.paint(term, "own", "me") == "me"
    assert DEFAULT_PALETTE.paint(term, "error", "x") == term.red("x")
    assert DEFAULT_PALETTE.paint(term, "mention", "x") == term.yellow("x")
