"""Test support: real node processes (`python -m nodes.<role>`) with their own environment.

Every process gets the test's cluster name and keys dir; its output goes to a log file that
is printed when a test fails to find what it waited for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class NodeProcess:
    """One node process; `stop()` sends SIGTERM, `kill()` sends SIGKILL."""

    def __init__(self, role: str, env: Mapping[str, str], log_dir: Path,
                 prefix: Iterator[str] | None = None, argv: list[str] | None = None) -> None:
        self.role = role
        self.node_id = env.get("SOIM_NODE_ID") or f"{role}-{uuid.uuid4().hex[:8]}"
        self.log_path = log_dir / f"{self.node_id}.log"
        full_env = {**os.environ, **env, "SOIM_NODE_ID": self.node_id,
                    "PYTHONUNBUFFERED": "1"}
        cmd = [*(prefix or []), sys.executable, "-m", f"nodes.{role}", *(argv or [])]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in wait())
        self.proc = subprocess.Popen(cmd, env=full_env, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """Ask for a graceful stop."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """kill -9."""
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the exit (killing after `timeout`); return the exit code."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._log.close()
        return code

    def log(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace")


@contextmanager
def node_processes(base_env: Mapping[str, str], log_dir: Path) -> Iterator[list[NodeProcess]]:
    """A list to append started nodes to; every one is stopped (then killed) at the end."""
    started: list[NodeProcess] = []
    try:
        yield started
    finally:
        for node in started:
            node.stop()
        for node in started:
            node.wait(10)
