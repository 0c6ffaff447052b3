"""`soimctl bench hops` end to end on SQLite: it starts its own cluster, sends lone 1:1
messages and prints, per role, what each one cost. Figures are not asserted (benchmarks are
commands, not tests); the shape is: every role of the cluster, numbers only, and the storage
node's count of stored messages among them."""

from __future__ import annotations

from pathlib import Path

from tests.tools.bench_run import run_bench


def test_bench_hops_prints_the_costs_of_every_role(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "hops", "--json", "--messages", "3")
    assert result["messages"] == 3
    assert result["nodes"] == {"gateway": 2, "router": 2, "directory": 1, "storage": 1}
    per_message = result["per_message"]
    assert set(per_message) == set(result["nodes"])
    for figures in per_message.values():
        assert all(isinstance(v, int | float) for v in figures.values())
    assert "soim_storage_messages_stored_total" in per_message["storage"]
    assert list(tmp_path.iterdir()) == []  # the throwaway cluster's folder is gone
