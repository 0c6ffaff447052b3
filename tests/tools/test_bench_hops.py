"""`soimctl bench hops` end to end on SQLite: it starts its own cluster, sends lone 1:1
messages and prints, per role, what each one cost. Figures are not asserted (benchmarks are
commands, not tests); the shape is: every role of the cluster, numbers only, and the storage
node's count of stored messages among them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_bench_hops_prints_the_costs_of_every_role(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOIM_")}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "tools.soimctl", "bench", "hops", "--json", "--messages", "3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["messages"] == 3
    assert result["nodes"] == {"gateway": 2, "router": 2, "directory": 1, "storage": 1}
    per_message = result["per_message"]
    assert set(per_message) == set(result["nodes"])
    for figures in per_message.values():
        assert all(isinstance(v, int | float) for v in figures.values())
    assert "soim_storage_messages_stored_total" in per_message["storage"]
    assert list(tmp_path.iterdir()) == []  # the throwaway cluster's folder is gone
