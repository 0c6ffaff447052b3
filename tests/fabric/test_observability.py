"""Observability on a real cluster: role metrics, Prometheus targets, alert rules, dashboard.

One cluster (directory, router, storage, gateway) serves a login, a failed login, a friendship
and a message; then every node's /metrics holds its role's metrics and soim_build_info;
`soimctl prometheus-targets --json` lists every live node, with role and node labels, at a
target that answers /metrics (and --out writes the same file, never an empty one); every
expression of the Grafana dashboard names metrics the nodes export; `promtool` accepts the alert
rules and the scrape example, and systemd-analyze the timer that refreshes the targets.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import fabric
from schema import common_pb2 as pb
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until, expect_error

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "soim.json"
RULES = ROOT / "deploy" / "prometheus" / "soim-alerts.yml"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PASSWORD = "correct horse"
ROLE_METRICS = {
    "gateway": {
        "soim_gateway_sessions",
        "soim_gateway_connections",
        "soim_gateway_unauthenticated_connections",
        "soim_gateway_unauthenticated_limit",
        "soim_gateway_pushes_total",
    },
    "directory": {"soim_directory_logins_total", "soim_directory_cache_lookups_total"},
    "router": {"soim_router_users", "soim_router_sessions"},
    "storage": {
        "soim_storage_commit_seconds_bucket",
        "soim_storage_writer_flushes_total",
        "soim_storage_writer_flushed_rows_total",
        "soim_storage_messages_stored_total",
    },
}
PROMQL_METRIC = re.compile(r"\b(soim_[a-z0-9_]+|up)\b")


def _scrape(target: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name → [(labels, value)] of http://target/metrics; a family with no sample yet
    is listed under its name with no samples."""
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        found.setdefault(family.name + ("_total" if family.type == "counter" else ""), [])
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


async def _soimctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **cluster.env}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tools.soimctl", "prometheus-targets", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _traffic(cluster: Cluster) -> None:
    """A registration, a login, a failed login, a friendship and a message."""
    alice, bob = await cluster.client(), await cluster.client()
    await alice.register("alice", PASSWORD)
    await bob.register("bob", PASSWORD)
    assert alice.user and bob.user
    await expect_error(pb.BAD_CREDENTIALS, (await cluster.client()).login("alice", "nope1234"))
    assert (await (await cluster.client()).login("alice", PASSWORD)).user_id == alice.user.user_id
    await alice.add_friend(bob.user.user_id)
    await bob.add_friend(alice.user.user_id)
    await alice.send("hello", to_user=bob.user.user_id)


@pytest.mark.timeout(90)
def test_metrics_targets_and_dashboard_on_a_cluster(tmp_path: Path, cluster_name: str) -> None:
    asyncio.run(_scenario(tmp_path, cluster_name))


async def _scenario(tmp_path: Path, cluster_name: str) -> None:
    async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path / 'data'}") as cluster:
        nodes = await cluster.start_all()
        await _traffic(cluster)

        listed = await _soimctl(cluster, "--json", "--wait", "10")
        assert listed.returncode == 0, listed.stderr
        groups: list[dict[str, Any]] = json.loads(listed.stdout)
        by_node = {g["labels"]["node"]: g for g in groups}
        assert set(by_node) == {n.node_id for n in nodes}
        roles = {n.node_id: n.role for n in nodes}
        assert all(
            g["labels"] == {"role": roles[node], "node": node, "cluster": cluster_name}
            and len(g["targets"]) == 1
            for node, g in by_node.items()
        )

        scraped = {
            node: await asyncio.to_thread(_scrape, g["targets"][0]) for node, g in by_node.items()
        }
        build = {"version": fabric.__version__, "python": platform.python_version()}
        for node, samples in scraped.items():
            assert samples["soim_build_info"] == [(build, 1.0)], node
            missing = ROLE_METRICS[roles[node]] - samples.keys()
            assert not missing, f"{roles[node]} lacks {sorted(missing)}"
        gateway = next(s for n, s in scraped.items() if roles[n] == "gateway")
        directory = next(s for n, s in scraped.items() if roles[n] == "directory")
        assert [v for _, v in gateway["soim_gateway_sessions"]] == [3.0]  # not the failed one
        logins = {labels["outcome"]: v for labels, v in directory["soim_directory_logins_total"]}
        assert logins == {"ok": 1.0, "bad_credentials": 1.0}
        assert sum(v for _, v in directory["soim_directory_cache_lookups_total"]) >= 1
        target = {roles[n]: g["targets"][0] for n, g in by_node.items()}
        await async_wait_until(  # a commit and a push may land just after the replies
            lambda: (
                _total(target["storage"], "soim_storage_writer_flushed_rows_total") >= 1
                and _total(target["gateway"], "soim_gateway_pushes_total", result="sent") >= 1
            ),
            timeout=5,
            interval=0.1,
            what="a commit and a push counted",
        )

        exported = set().union(*(s.keys() for s in scraped.values())) | {"up"}
        named = {m for expr in _dashboard_exprs() for m in PROMQL_METRIC.findall(expr)}
        assert named and not named - exported, f"not exported: {sorted(named - exported)}"
        rule_names = set(PROMQL_METRIC.findall(RULES.read_text()))
        assert not rule_names - exported, f"rules name {sorted(rule_names - exported)}"

        table = (await _soimctl(cluster, "--wait", "10")).stdout.splitlines()
        assert table[0] == f"cluster {cluster_name}: {len(nodes)} target(s)"
        assert sorted(line.split()[2] for line in table[2:]) == sorted(
            g["targets"][0] for g in groups
        )

        out = tmp_path / "targets.json"
        written = await _soimctl(cluster, "--out", str(out), "--wait", "10")
        assert written.returncode == 0, written.stderr
        assert {g["labels"]["node"] for g in json.loads(out.read_text())} == set(by_node)
        assert out.stat().st_mode & 0o777 == 0o644


def _total(target: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`, scraped now."""
    return sum(v for have, v in _scrape(target).get(name, []) if labels.items() <= have.items())


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    return exprs


@pytest.mark.timeout(60)
def test_prometheus_targets_refuses_to_write_an_empty_list(
    tmp_path: Path, cluster_name: str
) -> None:
    out = tmp_path / "targets.json"
    out.write_text("previous\n")
    env = {**os.environ, "SOIM_CLUSTER": cluster_name, "SOIM_KEYS_DIR": str(tmp_path / "k")}
    from fabric import keys

    keys.generate(tmp_path / "k")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.soimctl",
            "prometheus-targets",
            "--out",
            str(out),
            "--wait",
            "1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and "no live node" in done.stderr
    assert out.read_text() == "previous\n"


def test_promtool_accepts_the_alert_rules_and_scrape_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: make test installs prometheus (tools/ensure_services.sh)"
    rules = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS" in rules.stdout
    config = subprocess.run(
        [promtool, "check", "config", str(SCRAPE_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert config.returncode == 0, config.stdout + config.stderr


def test_targets_timer_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: make test installs systemd (tools/ensure_services.sh)"
    soimctl = Path(sys.executable).with_name("soimctl")
    for name in ("soim-prometheus-targets.service", "soim-prometheus-targets.timer"):
        text = (ROOT / "deploy" / "prometheus" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/soim/bin/soimctl", str(soimctl)))
    verify = subprocess.run(
        [
            analyze,
            "verify",
            "--man=no",
            "./soim-prometheus-targets.timer",
            "./soim-prometheus-targets.service",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", ""), verify
