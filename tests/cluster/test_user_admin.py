"""soimctl's user administration on a real cluster: `users` sees the users of every router,
`user list`, `user passwd` (stdin, never the command line) and `user delete`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, running_cluster
from tests.processes import ROOT

PASSWORD = "correct horse"


async def soimctl(cluster: Cluster, *args: str, stdin: bytes = b"") -> tuple[int, Any]:
    """Run `soimctl ARGS --json` (stdin not a terminal); its exit status and parsed JSON."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.soimctl", *args, "--json", cwd=ROOT,
        env={**os.environ, **cluster.env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    async with asyncio.timeout(30):
        out, err = await proc.communicate(stdin)
    assert out, err.decode()
    return proc.returncode or 0, json.loads(out)


@pytest.mark.timeout(60)
def test_users_lists_the_users_of_every_router(tmp_path: Path, cluster_name: str) -> None:
    """Online users spread over two routers; each of several `soimctl users` (run at once, so
    each view settles while the others' admissions come in) lists all of them."""

    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await cluster.start_all(routers=2)
            names = [f"user{i}" for i in range(8)]
            for name in names:
                await (await cluster.client()).register(name, PASSWORD)
            runs = await asyncio.gather(*(soimctl(cluster, "users") for _ in range(8)))
            for status, listing in runs:
                assert status == 0
                assert sorted(u["account"] for u in listing["users"]) == names

    asyncio.run(main())
