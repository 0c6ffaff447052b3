"""The name-based command grammar and Tab completion, without a cluster: `msg WHO TEXT`,
`add USER`, `help COMMAND`, the words a refusal is said in, and what Tab makes of the line
(commands after '/', accounts, #groups, the next candidate on Tab again)."""

from __future__ import annotations

import pytest

from fabric.methods import RpcError
from schema import client_pb2
from schema import common_pb2 as pb
from tui import commands, grammar
from tui.command_results import Table
from tui.commands import CommandError, Target, parse
from tui.completion import Completer, Names


@pytest.mark.timeout(10)
def test_names_in_the_grammar_help_and_refusals() -> None:
    msg = parse("msg #rustaceans hello  all")
    assert (msg.name, msg.args["WHO"], msg.args["TEXT"]) == ("msg", "#rustaceans", ["hello", "all"])
    assert parse('msg "#my team" hi').args["WHO"] == "#my team"
    assert parse("add bob").args["USER"] == "bob"
    assert parse("add -u 7").args["-u"] == "7"
    assert parse("help msg").args["COMMAND"] == "msg" and parse("help").args["COMMAND"] is None
    assert commands.help_of("/MSG")[:2] == [
        "msg — send to a friend or a #group",
        "Usage: msg WHO TEXT...",
    ]
    with pytest.raises(CommandError, match=r"^unknown command: dance; help lists them$"):
        commands.help_of("dance")
    with pytest.raises(CommandError, match=r"^usage: msg WHO TEXT\.\.\.$"):
        parse("msg bob")

    bob, devs = Target(2, name="bob"), Target(3, group=True, name="#devs")
    assert (bob == Target(2), str(bob), bob.label, Target(2).label) == (True, "2", "bob", "2")
    assert commands.refusal(pb.NOT_FRIEND, bob) == "Not your friend yet: bob (add bob first)"
    assert commands.refusal(pb.NOT_FOUND, devs) == "No such group: #devs"
    for code, text in (
        (pb.NOT_FOUND, "No such user or group"),
        (pb.SELF_MESSAGE, "You cannot message yourself"),
        (pb.NOT_FRIEND, "Not your friend yet"),
    ):
        assert commands.humanise(RpcError(code)) == text
    assert commands.humanise(RpcError(pb.NOT_FOUND, "no such user: zed")) == "No such user: zed"


def tab(completer: Completer, line: str) -> tuple[str, list[str]]:
    text, cursor, shown = completer.complete(line, len(line))
    assert cursor == len(text)
    return text, shown


@pytest.mark.timeout(10)
def test_tab_completes_commands_accounts_and_groups() -> None:
    names = Names()
    names.saw_friends(
        [client_pb2.Friend(user_id=2, account="bob"), client_pb2.Friend(user_id=4, account="bobby")]
    )
    names.saw_groups(
        [
            client_pb2.GroupInfo(group_id=3, name="rustaceans"),
            client_pb2.GroupInfo(group_id=5, name="my team"),
        ]
    )
    names.saw_table(Table(("uid", "account", "nickname"), [("6", "carol", "Carol")]))
    completer = Completer(names, grammar.USAGES)

    assert tab(completer, "/he") == ("/help ", ["/help"])
    assert tab(completer, "/help ms") == ("/help msg ", ["msg"])
    assert tab(completer, "/msg ca") == ("/msg carol ", ["carol"])
    assert tab(completer, "/msg #ru") == ("/msg #rustaceans ", ["#rustaceans"])
    assert tab(completer, "/open #m") == ('/open "#my team" ', ['"#my team"'])
    assert tab(completer, "/add bo") == ("/add bob ", ["bob", "bobby"])
    assert tab(completer, "/add bob ") == ("/add bobby ", ["bob", "bobby"])  # Tab again
    assert tab(completer, "/add bobby ") == ("/add bob ", ["bob", "bobby"])
    assert tab(completer, "hi ca") == ("hi carol ", ["carol"])  # a name in chat text
    assert tab(completer, "/msg zed") == ("/msg zed", [])
    # in the middle of a line: the word before the cursor, the rest kept
    assert completer.complete("/msg ca hello", 7) == ("/msg carol hello", 11, ["carol"])

    assert names.target("#rustaceans") == Target(3, group=True)
    assert names.target("Carol") == Target(6) and names.target("zed") is None
    names.clear()
    assert tab(completer, "/msg ca") == ("/msg ca", [])
