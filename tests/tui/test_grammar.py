"""The client's pieces without a cluster: the command grammar, the so-im-style lines, the input
line's editing and history, and the receipt marks of the model."""

from __future__ import annotations

import pytest
from blessed.keyboard import Keystroke

from fabric.methods import RpcError
from schema import client_pb2
from schema import common_pb2 as pb
from tui import command_results as results
from tui import commands
from tui.app_input import Action, LineEditor, key_action
from tui.app_state import Model
from tui.commands import CommandError, Target, parse
from tui.render_text import message_line, result_lines


@pytest.mark.timeout(10)
def test_every_command_parses_and_bad_lines_say_why() -> None:
    assert parse("login -p pw -u alice").args == {"-u": "alice", "-p": "pw"}
    assert parse("register -u a -p b -n Al").args["-n"] == "Al"
    send = parse("send -g 7 hello  there")
    assert (send.args["-g"], send.args["TEXT"]) == ("7", ["hello", "there"])
    assert parse("group create my team").args["NAME"] == ["my", "team"]
    assert parse("group users").args["users"] and parse("group users").args["GROUP_ID"] is None
    assert parse("history").args["-n"] == "20"
    assert parse("OPEN g:5").name == "open"
    # quotes group words as in a shell; an apostrophe or a backslash is just a character
    assert parse('register -u alice -p "correct horse"').args["-p"] == "correct horse"
    assert parse("login -u bob -p 'two words'").args["-p"] == "two words"
    assert parse("send -u 2 don't worry").args["TEXT"] == ["don't", "worry"]
    assert parse("send -u 2 see C:\\temp # now").args["TEXT"] == ["see", "C:\\temp", "#", "now"]
    assert parse('group create "rust aceans"').args["NAME"] == ["rust aceans"]
    for line in (
        "users",
        "friends",
        "group",
        "me",
        "help",
        "exit",
        "search -u a",
        "add -u 3",
        "group search x",
        "group join 1",
        "group leave 1",
        "group users 2",
    ):
        assert parse(line).name == line.split()[0]

    with pytest.raises(CommandError, match=r"^unknown command: dance$"):
        parse("dance now")
    with pytest.raises(CommandError, match=r"^usage: send \(-u USER_ID \| -g GROUP_ID\) TEXT"):
        parse("send 5 hi")
    with pytest.raises(CommandError, match=r"^usage: users \[--all\]$"):
        parse("users everyone")
    for line in (
        "users --all",
        "unfriend bob",
        "decline 3",
        "block bob",
        "unblock 3",
        "group kick 1 bob",
        "group owner 1 3",
        "passwd 'old one' new-secret",
        "delete-account -p secret --yes",
    ):
        assert parse(line).name == line.split()[0]
    with pytest.raises(CommandError, match=r"^usage: passwd OLD_PASSWORD NEW_PASSWORD$"):
        parse("passwd only-one")
    assert commands.target("g:12") == Target(12, group=True)
    assert commands.target("7") == Target(7)
    for bad in ("g:", "x7", "0", "-1", str(1 << 64)):
        with pytest.raises(CommandError):
            commands.target(bad)
    assert (
        "send (-u USER_ID | -g GROUP_ID) TEXT...  — send to a friend or a group"
        in commands.help_lines()
    )


@pytest.mark.timeout(10)
def test_results_print_as_so_im_did() -> None:
    table = results.Table(("uid", "account"), [("1", "alice"), ("2", "bob")])
    assert result_lines(table) == ["uid | account", "1 | alice", "2 | bob"]
    assert result_lines(results.Table(("uid", "account"), [])) == ["uid | account", "(none)"]
    reply = client_pb2.LoginReply(user_id=42, account="alice")
    assert result_lines(results.LoggedIn(reply, "tcp://10.0.0.5:7001")) == [
        "uid=42, entryHost=10.0.0.5:7001"
    ]
    assert result_lines(results.Bye()) == ["bye bye"]
    assert (
        commands.humanise(RpcError(pb.ALREADY_EXISTS, "group name 'x' is taken"))
        == "Already exists: group name 'x' is taken"
    )
    assert commands.humanise(RpcError(pb.UNAVAILABLE)) == "Unavailable"
    direct = client_pb2.ChatMessage(sender=1, sender_account="bob", body="hi", to_user=2)
    group = client_pb2.ChatMessage(sender=1, sender_account="bob", body="hi all", to_group=9)
    assert (message_line(direct), message_line(group)) == ("bob: hi", "[g:9] bob: hi all")


def press(editor: LineEditor, *keys: str) -> list[Action]:
    names = {
        "left": "KEY_LEFT",
        "right": "KEY_RIGHT",
        "home": "KEY_HOME",
        "end": "KEY_END",
        "bs": "KEY_BACKSPACE",
        "del": "KEY_DELETE",
        "up": "KEY_UP",
        "down": "KEY_DOWN",
        "pgup": "KEY_PGUP",
    }
    actions = []
    for key in keys:
        stroke = Keystroke("\x1b[?", code=1, name=names[key]) if key in names else Keystroke(key)
        actions.append(key_action(stroke, editor))
    return actions


@pytest.mark.timeout(10)
def test_the_input_line_edits_and_remembers() -> None:
    editor = LineEditor()
    press(editor, *"helo", "left", "l", "home", ">", "end", "!", "bs")
    assert (editor.text, editor.cursor) == (">hello", 6)
    press(editor, "home", "del", "\x05", "\x15")
    assert editor.text == ""
    for line in ("first", "second"):
        press(editor, *line)
        assert press(editor, "\r") == [Action.SUBMIT]
        editor.submit()
    press(editor, *"draft")
    press(editor, "up")
    assert editor.text == "second"
    press(editor, "up", "up")
    assert editor.text == "first"
    press(editor, "down", "down")
    assert editor.text == "draft"
    editor.submit(remember=False)
    press(editor, "up")
    assert editor.text == "second"
    assert press(editor, "pgup", "\t") == [Action.PAGE_UP, Action.NEXT]
    editor.kill()
    assert press(editor, "\x04") == [Action.QUIT]


@pytest.mark.timeout(10)
def test_marks_follow_receipts_and_read_counts() -> None:
    model = Model()
    model.me = client_pb2.LoginReply(user_id=1, account="alice")
    friend, group = Target(2), Target(9, group=True)
    model.ensure(5, friend, "Bob")
    model.ensure(9, group, "devs")
    for seq in (1, 2):
        model.acked(friend, client_pb2.SendAck(conv_id=5, seq=seq, client_msg_id=f"m{seq}"), "x")
    mine = model.thread(5).ordered()
    assert [model.mark(m) for m in mine] == ["✓", "✓"]
    model.receipt(client_pb2.Receipt(conv_id=5, user_id=2, delivered_seq=2, read_seq=1))
    assert [model.mark(m) for m in mine] == ["✓✓ read", "✓✓"]
    model.acked(group, client_pb2.SendAck(conv_id=9, seq=1, client_msg_id="g1"), "y")
    model.set_counts(
        client_pb2.GroupReadCountsReply(
            conv_id=9, members=3, counts=[client_pb2.SeqReadCount(seq=1, read=1, delivered=2)]
        )
    )
    assert model.mark(model.thread(9).ordered()[0]) == "✓✓ read 1/2"

    # unread: arriving messages count until read; my own do not
    model.add_message(client_pb2.ChatMessage(conv_id=5, seq=3, sender=2, to_user=1, body="a"))
    model.add_message(client_pb2.ChatMessage(conv_id=5, seq=4, sender=2, to_user=1, body="b"))
    assert model.entries[5].unread == 2
    model.receipt(client_pb2.Receipt(conv_id=5, user_id=1, read_seq=4))  # my other device
    assert model.entries[5].unread == 0
