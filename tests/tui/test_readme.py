"""The README's chat commands, read from README.md itself and run as written against a cluster
of real node processes: the two `/register` lines, then the `soim --plain` session of the
"Chatting" section line by line (each command by its user, every line it shows checked; ids
may differ from the README's, so an id there stands for whatever id the cluster gave), then
the `printf … | .venv/bin/soim --plain --server …` pipeline through a shell, which must exit
0. The same session typed into two full-screen clients (tmux), with a '/' before each
command, shows the same lines in their consoles (a message shows in its conversation
instead). A README edit that breaks one of its own commands fails here."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.harness import Cluster, running_cluster
from tests.tui.lines import LineClient
from tests.tui.terminal import ROOT, Tmux
from tests.tui.test_plain import server_args, start_cluster
from tui.grammar import USAGES

README = ROOT / "README.md"
ID = re.compile(r"(?<=uid )\d+|(?<=uid=)\d+|(?<=gid=)\d+|(?<=g:)\d+|^\d+(?= \| )")
"""Where an id stands in a line so-im prints."""


def chatting() -> str:
    text = README.read_text()
    return text[text.index("## Chatting") : text.index("\n## ", text.index("## Chatting"))]


def session_steps(section: str) -> list[tuple[str, bool, str, list[str]]]:
    """(user, is a command, the command or the line the user sees, the lines it prints) of
    the session block that follows 'your ids will differ'."""
    block = section.split("your ids will differ", 1)[1].split("```\n", 2)[1]
    steps: list[tuple[str, bool, str, list[str]]] = []
    for line in block.splitlines():
        prompt = re.fullmatch(r"(\w+)>\s+(.*)", line)
        if prompt:
            who, text = prompt[1], prompt[2]
            steps.append((who, text.split()[0] in USAGES, text, []))
        else:
            steps[-1][3].append(line)
    return steps


class Ids:
    """README ids and the cluster's: bound where one first shows, the same ever after."""

    def __init__(self) -> None:
        self.actual: dict[str, str] = {}

    def pattern(self, line: str) -> tuple[re.Pattern[str], dict[str, str]]:
        """The line as a pattern, and the group name of each id it binds."""
        parts, names, end = [], {}, 0
        for m in ID.finditer(line):
            parts.append(re.escape(line[end : m.start()]))
            if m[0] in self.actual:
                parts.append(self.actual[m[0]])
            elif m[0] in names:
                parts.append(f"(?P={names[m[0]]})")
            else:
                names[m[0]] = f"id{len(names)}"
                parts.append(rf"(?P<{names[m[0]]}>\d+)")
            end = m.end()
        parts.append(re.escape(line[end:]))
        return re.compile("".join(parts)), names

    def bind(self, match: re.Match[str], names: dict[str, str]) -> None:
        for readme, group in names.items():
            self.actual[readme] = match[group]

    def command(self, text: str) -> str:
        return ID.sub(lambda m: self.actual.get(m[0], m[0]), text)


@pytest.mark.timeout(90)
def test_the_readme_commands_work_as_written(
    tmp_path: Path, cluster_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no remembered logins
    section = chatting()
    registers = re.findall(r"`/(register -u (\w+) -p \"[^\"]+\")`", section)
    assert [who for _, who in registers] == ["alice", "bob"], registers
    steps = session_steps(section)
    assert len(steps) > 10, steps

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await start_cluster(cluster)
            clients = {
                who: LineClient(server_args(cluster, i), tmp_path, who)
                for i, (_, who) in enumerate(registers)
            }
            try:
                for command, who in registers:
                    await clients[who].run(command, [re.compile(r"uid=\d+, entryHost=\S+")])
                await run_session(clients, steps)
            finally:
                for client in clients.values():
                    client.close()
            await run_pipeline(cluster, section)

    asyncio.run(main())


async def run_session(
    clients: dict[str, LineClient], steps: list[tuple[str, bool, str, list[str]]]
) -> None:
    ids = Ids()
    for who, is_command, text, shown in steps:
        client = clients[who]
        if is_command:
            client.send(ids.command(text))
        for line in ([] if is_command else [text]) + shown:
            pattern, names = ids.pattern(line)
            [match] = await client.expect([pattern])
            ids.bind(match, names)


async def run_pipeline(cluster: Cluster, section: str) -> None:
    """The `printf … | soim --plain` example, through a shell, on this cluster's gateway."""
    [example] = re.findall(r"```sh\n(printf .*?)```", section, re.DOTALL)
    endpoint, _ = cluster.gateways()[0]
    command = example.replace("tcp://127.0.0.1:7000", endpoint)
    done = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SOIM_KEYS_DIR": str(cluster.keys_dir)},
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"uid=\d+, entryHost=\S+", lines[0]), lines
    assert lines[1] == "uid | account | nickname | online", lines
    assert re.fullmatch(r"\d+ \| bob \| bob \| offline", lines[2]), lines
    assert re.fullmatch(r"sent to bob seq=\d+", lines[3]) and lines[4:] == ["bye bye"], lines


@pytest.mark.timeout(90)
def test_the_readme_session_in_the_full_screen_client(
    tmp_path: Path, cluster_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    section = chatting()
    registers = re.findall(r"`(/register -u (\w+) -p \"[^\"]+\")`", section)
    steps = session_steps(section)

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await start_cluster(cluster)
            tmux = Tmux(tmp_path)
            try:
                for i, (command, who) in enumerate(registers):
                    tmux.start(who, server_args(cluster, i))
                    tmux.type(who, command)
                    await tmux.wait(who, rf"^ so-im │ {who} \(uid \d+\)")
                await type_session(tmux, steps)
            finally:
                tmux.close()

    asyncio.run(main())


async def type_session(tmux: Tmux, steps: list[tuple[str, bool, str, list[str]]]) -> None:
    """Each command typed with its '/'; each line it prints waited for in the console, and
    each notice by its start (`* alice (uid 1)`); a message, in the sidebar as an unread
    conversation."""
    ids = Ids()
    for who, is_command, text, shown in steps:
        if is_command:
            tmux.type(who, "/" + ids.command(text))
        elif not text.startswith("* "):  # a message: its conversation is unread
            sender = re.fullmatch(r"(?:\[g:\d+\] )?(\w+): .*", text)
            assert sender, text
            where = "# rustaceans" if text.startswith("[g:") else sender[1]
            await tmux.wait(who, rf"^ [●○#]? ?{re.escape(where.lstrip('# '))} +\d+ │")
            continue
        for line in ([] if is_command else [text]) + shown:
            notice = line.startswith("* ")  # worded for the screen: the same start
            pattern, names = ids.pattern(line[: line.index(")") + 1] if notice else line)
            match = await tmux.wait(who, rf"│{pattern.pattern}{'.*' if notice else ''}\s*$")
            ids.bind(match, names)
