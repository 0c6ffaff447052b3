"""Test support: `soim --plain` as a subprocess driven line by line.

`LineClient` writes one command at a time to the client's stdin and collects what it prints
on a reader thread; `expect` waits (with a deadline) for the lines a command should print and
compares them one by one — literally, or as a regular expression where a line is a `Pattern`.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support import async_wait_until
from tests.tui.terminal import ROOT, SOIM

Expected = str | re.Pattern[str]


class LineClient:
    """One `soim --plain` process with a pipe for stdin and stdout."""

    def __init__(
        self,
        args: list[str],
        log_dir: Path,
        name: str,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`soim --plain ARGS`, run under `prefix` (e.g. `ip netns exec NS`) with `env` added
        to the test's environment."""
        self.err_path = log_dir / f"{name}.err"
        self._err = open(self.err_path, "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [*prefix, *SOIM, "--plain", *args],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self.read = 0  # lines already checked
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    async def expect(self, expected: list[Expected], timeout: float = 10.0) -> list[re.Match[str]]:
        """The next len(expected) lines, each equal to (or fully matching) its expectation."""

        def ready() -> bool:
            with self._lock:
                return len(self.lines) >= self.read + len(expected)

        try:
            await async_wait_until(ready, timeout=timeout, what=f"{len(expected)} lines")
        except AssertionError:
            raise AssertionError(
                f"wanted {expected}, got {self.lines[self.read :]}; stderr: {self.stderr()}"
            ) from None
        with self._lock:
            got = self.lines[self.read : self.read + len(expected)]
        matches = []
        for line, want in zip(got, expected, strict=True):
            pattern = want if isinstance(want, re.Pattern) else re.compile(re.escape(want))
            match = pattern.fullmatch(line)
            assert match, f"line {line!r} is not {want!r}; all lines:\n" + "\n".join(got)
            matches.append(match)
        self.read += len(expected)
        return matches

    async def run(
        self, command: str, expected: list[Expected], timeout: float = 10.0
    ) -> list[re.Match[str]]:
        """Send `command`; its output is `expected`."""
        self.send(command)
        return await self.expect(expected, timeout)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")[-3000:]

    def close(self, timeout: float = 10.0) -> int:
        """Close stdin (EOF) and wait for the exit; return the exit status."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._reader.join(5)
        self._err.close()
        return code
