"""Test support: the real `soim` in a pty, inside a tmux server of the test's own.

`Tmux` starts one window per client (fixed size, UTF-8), types into it with send-keys, reads
the screen with capture-pane, resizes it, and waits for what the screen shows by polling with a
deadline (never a bare sleep). The tmux server, and every client in it, is killed at the end.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import async_wait_until
from tui.render_screen import SIDEBAR_MAX

ROOT = Path(__file__).resolve().parents[2]
SOIM = [str(Path(sys.executable).parent / "soim")]  # the console script


class Tmux:
    """A private tmux server (its own socket, in a short temporary directory: the test's
    tmp_path may be too long for a unix socket path); one session per client."""

    def __init__(self, log_dir: Path) -> None:
        self._dir = tempfile.mkdtemp(prefix="soimtmux-")
        self.socket = os.path.join(self._dir, "tmux")
        self.log_dir = log_dir

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout

    def start(self, name: str, args: list[str], width: int = 120, height: int = 40) -> None:
        """Run `soim ARGS` in a new session `name`, its stderr to NAME.err."""
        err = self.log_dir / f"{name}.err"
        command = (
            f"cd {shlex.quote(str(ROOT))} && exec {shlex.join(SOIM + args)} "
            f"2>{shlex.quote(str(err))}"
        )
        self.tmux(
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            str(width),
            "-y",
            str(height),
            "-e",
            "LANG=C.UTF-8",
            "-e",
            f"PATH={os.environ['PATH']}",
            command,
        )
        self.tmux("set-option", "-t", name, "remain-on-exit", "on")
        # the server outlives its last session: a test that kills one and starts the next at
        # once would otherwise reach a server on its way out (new-session fails)
        self.tmux("set-option", "-s", "exit-empty", "off")

    def type(self, name: str, text: str, enter: bool = True) -> None:
        """Type `text` literally, then Enter."""
        self.tmux("send-keys", "-t", name, "-l", text)
        if enter:
            self.keys(name, "Enter")

    def keys(self, name: str, *keys: str) -> None:
        """Press named keys (Enter, Tab, PPage, Left, BSpace, …)."""
        self.tmux("send-keys", "-t", name, *keys)

    def screen(self, name: str) -> str:
        return self.tmux("capture-pane", "-p", "-t", name)

    def resize(self, name: str, width: int, height: int) -> None:
        self.tmux("resize-window", "-t", name, "-x", str(width), "-y", str(height))

    def dead(self, name: str) -> bool:
        return self.tmux("display-message", "-p", "-t", name, "#{pane_dead}").strip() == "1"

    async def wait(self, name: str, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """The first match of `pattern` (multiline) on the screen, once it shows."""
        regex = re.compile(pattern, re.MULTILINE)
        try:
            return await async_wait_until(
                lambda: regex.search(self.screen(name)),
                timeout=timeout,
                what=f"{pattern!r} on {name}",
            )
        except AssertionError:
            raise AssertionError(
                f"{pattern!r} never showed on {name}; the screen:\n"
                f"{self.screen(name)}\nstderr:\n{self.stderr(name)}"
            ) from None

    async def register(self, name: str, nickname: str, password: str) -> int:
        """Register account `name` by typing /register in window `name`; the uid it shows."""
        self.type(name, f"/register -u {name} -p {password} -n {nickname}")
        match = await self.wait(name, rf"^ so-im │ {name} \(uid (\d+)\) │ [\d.]+:\d+ │ online")
        return int(match[1])

    async def wait_layout(self, name: str, width: int, height: int) -> None:
        """The screen is drawn for width x height: header on top, input line at the bottom,
        the sidebar border on every row between, no line wider than the terminal."""
        side = min(SIDEBAR_MAX, width // 4)

        def drawn() -> bool:
            lines = self.screen(name).rstrip("\n").split("\n")
            return (
                len(lines) == height
                and lines[0].startswith(" so-im │")
                and lines[-1].startswith(">")
                and all(len(line) > side and line[side] == "│" for line in lines[1:-2])
                and all(len(line) <= width for line in lines)
            )

        await async_wait_until(drawn, timeout=10, what=f"a {width}x{height} layout of {name}")

    def stderr(self, name: str) -> str:
        path = self.log_dir / f"{name}.err"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def close(self) -> None:
        """Kill the server and every client in it; remove the socket."""
        subprocess.run(
            ["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=10, check=False
        )
        shutil.rmtree(self._dir, ignore_errors=True)
