"""Two hosts: real node processes in two network namespaces joined by a veth pair discover each
other over zeroconf on the veth and complete RPCs across it, and nothing of theirs can reach the
machine's real interfaces.

The namespaces and the pair come from `tests.netns.two_hosts()` (created here, deleted at the
end even on failure; the pair is created inside the namespaces, so the root namespace is never
touched). Each node runs under `ip netns exec` with SOIM_HOST and SOIM_DISCOVERY_IFACES set to
its veth address. Shown:
- from each namespace an observer (`python -m tests.netns probe`) sees both nodes alive, with
  their endpoints on their veth addresses, and calls `fabric.Status` on the node in the other
  namespace across the veth: its `peers_alive` holds this side's node (each side sees the other);
- `soimctl nodes --json` run in namespace A lists both nodes with 10.213.x endpoints;
- containment: each node process lives in its namespace (not the root one), whose only
  interfaces are lo and its veth end; the only UDP 5353 sockets there are the node's — the
  sending one bound to the veth address, plus zeroconf's receive-only wildcard socket — and the
  mDNS group 224.0.0.251 is joined on the veth alone. So no mDNS can leave by a real interface.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import (
    Host,
    group_members,
    link_names,
    mdns_sockets,
    netns_inode,
    process_netns_inode,
    two_hosts,
)
from tests.processes import ROOT, NodeProcess, node_processes

PROBE_TIMEOUT_S = 20.0


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    """Namespaces A and B joined by a veth pair; removed afterwards whatever happens."""
    if shutil.which("ip") is None:
        pytest.fail("the two-host test needs iproute2 (`ip`) and root: install iproute2")
    with two_hosts() as pair:
        yield pair


def _host_env(cluster_env: dict[str, str], host: Host) -> dict[str, str]:
    return {**cluster_env, "SOIM_HOST": host.addr, "SOIM_DISCOVERY_IFACES": host.addr}


def _in_ns(host: Host, env: dict[str, str], *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*host.exec_prefix(), sys.executable, *argv],
        env={**os.environ, **env},
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen[str], what: str, nodes: list[NodeProcess]) -> Any:
    try:
        out, err = proc.communicate(timeout=PROBE_TIMEOUT_S + 15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    logs = "\n".join(f"--- {n.node_id}\n{n.log()}" for n in nodes)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{err}\n{logs}"
    return json.loads(out)


@pytest.mark.netns
@pytest.mark.timeout(90)
def test_nodes_in_two_namespaces_discover_each_other_and_call_across_the_veth(
    hosts: tuple[Host, Host], cluster_env: dict[str, str], tmp_path: Path
) -> None:
    host_a, host_b = hosts
    env_a, env_b = _host_env(cluster_env, host_a), _host_env(cluster_env, host_b)
    with node_processes(cluster_env, tmp_path) as nodes:
        a = NodeProcess("router", env_a, tmp_path, prefix=host_a.exec_prefix())
        nodes.append(a)
        b = NodeProcess("directory", env_b, tmp_path, prefix=host_b.exec_prefix())
        nodes.append(b)
        on_host = {a.node_id: host_a, b.node_id: host_b}

        # each side observes the cluster and asks the node on the other side whom it sees
        probes = [
            (
                _in_ns(
                    host_a,
                    env_a,
                    "-m",
                    "tests.netns",
                    "probe",
                    b.node_id,
                    a.node_id,
                    "--timeout",
                    str(PROBE_TIMEOUT_S),
                ),
                f"probe in {host_a.ns}",
            ),
            (
                _in_ns(
                    host_b,
                    env_b,
                    "-m",
                    "tests.netns",
                    "probe",
                    a.node_id,
                    b.node_id,
                    "--timeout",
                    str(PROBE_TIMEOUT_S),
                ),
                f"probe in {host_b.ns}",
            ),
        ]
        results = [_finish(proc, what, nodes) for proc, what in probes]
        for (me, other), result in zip(((a, b), (b, a)), results, strict=True):
            assert set(result["alive"]) == {a.node_id, b.node_id}
            for node_id, endpoints in result["alive"].items():
                for endpoint in endpoints.values():
                    assert endpoint.startswith(f"tcp://{on_host[node_id].addr}:"), endpoint
            status = result["status"]
            assert status["node_id"] == other.node_id
            assert me.node_id in status["peers_alive"]
            assert status["endpoints"]["rpc"].startswith(f"tcp://{on_host[other.node_id].addr}:")

        # the CLI, run in namespace A, lists both nodes with their veth endpoints
        deadline = time.monotonic() + 15
        while True:
            listing = _finish(
                _in_ns(host_a, env_a, "-m", "tools.soimctl", "nodes", "--json", "--wait", "3"),
                "soimctl nodes --json",
                nodes,
            )
            got = {n["node_id"]: n for n in listing["nodes"]}
            if set(got) == set(on_host) or time.monotonic() > deadline:
                break
        assert set(got) == set(on_host), listing
        assert listing["cluster"] == cluster_env["SOIM_CLUSTER"]
        for node_id, row in got.items():
            assert row["host"] == on_host[node_id].addr
            assert row["endpoints"]["rpc"].startswith(f"tcp://{on_host[node_id].addr}:")

        # containment: nothing of ours can go out by a real interface
        root_ns = process_netns_inode(os.getpid())
        root_links = link_names()
        for node in (a, b):
            host = on_host[node.node_id]
            assert node.proc.poll() is None, node.log()
            assert process_netns_inode(node.proc.pid) == netns_inode(host.ns) != root_ns
            assert link_names(host) == {"lo", host.veth}
            assert host.veth not in root_links
            sockets = mdns_sockets(host)
            assert {pid for _, pid in sockets} == {node.proc.pid}, sockets
            assert host.addr in {addr for addr, _ in sockets}, sockets
            assert {addr for addr, _ in sockets} <= {host.addr, "0.0.0.0"}, sockets
            assert group_members(host) == {host.veth}
