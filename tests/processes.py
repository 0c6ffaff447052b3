"""Test support: real node processes (`python -m nodes.<role>`) with their own environment.

Every process gets the test's cluster name and keys dir; its output goes to a log file that
is printed when a test fails to find what it waited for.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from tools.local_cluster import LocalNode

ROOT = Path(__file__).resolve().parent.parent


class NodeProcess(LocalNode):
    """One node process of a test; the test runner's environment plus `env`, optionally run
    under `prefix` (e.g. `ip netns exec NS`). `stop()` sends SIGTERM, `kill()` SIGKILL."""

    def __init__(
        self, role: str, env: Mapping[str, str], log_dir: Path, prefix: Sequence[str] = ()
    ) -> None:
        super().__init__(role, {**os.environ, **env}, log_dir, prefix)


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
