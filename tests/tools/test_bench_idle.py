"""`soimctl bench idle` end to end: it starts the Procfile's cluster under honcho as `make run`
does, prints JSON with the memory of every process and the sums, stops the cluster and removes
its folder. Figures are not asserted (benchmarks are commands, not tests); the shape is: every
process of the tree (honcho, a keep_running per node, the six nodes) with each figure, and
sums that add up."""

from __future__ import annotations

from pathlib import Path

from tests.tools.bench_run import run_bench

FIGURES = {"rss_mb", "pss_mb", "uss_mb", "threads"}
NODES = ["directory", "gateway", "gateway", "router", "router", "storage"]


def test_bench_idle_prints_every_process_and_the_sums(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "idle", "--json", "--settle", "0")
    processes = result["processes"]
    for proc in processes:
        assert proc.keys() >= FIGURES | {"pid", "kind", "name"}
        assert all(isinstance(proc[k], int | float) and proc[k] > 0 for k in FIGURES)
    nodes = [p for p in processes if p["kind"] == "node"]
    assert sorted(p["name"].split(" #")[0] for p in nodes) == NODES
    supervisors = [p["name"] for p in processes if p["kind"] == "supervisor"]
    assert supervisors[0].startswith("honcho")
    assert sum(name.startswith("keep_running ") for name in supervisors) == len(NODES)
    for label, rows in (("all", processes), ("nodes", nodes)):
        total = result[label]
        assert total["processes"] == len(rows)
        assert total["threads"] == sum(p["threads"] for p in rows)
        for k in ("rss_mb", "pss_mb", "uss_mb"):
            assert abs(total[k] - sum(p[k] for p in rows)) < 0.1 * len(rows)
    assert list(tmp_path.iterdir()) == []  # the cluster's folder is gone
