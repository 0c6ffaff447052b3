"""Every soimctl command against a running cluster, with its --json output parsed and checked:
nodes, users, user add, user disable, groups, stats, shards, and drain (a drained gateway's
clients move to the other gateway and keep working)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fabric.methods import RpcError
from schema import common_pb2 as pb
from tests.harness import Cluster, running_cluster
from tests.processes import ROOT
from tests.support import async_wait_until
from tui.session import EventKind

PASSWORD = "correct horse"


async def soimctl(cluster: Cluster, *args: str) -> Any:
    """Run `soimctl ARGS --json` as a separate process against the cluster; its parsed JSON."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.soimctl",
        *args,
        "--json",
        cwd=ROOT,
        env={**os.environ, **cluster.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode() + out.decode()
    return json.loads(out)


async def soimctl_table(cluster: Cluster, *args: str) -> list[str]:
    """Run `soimctl ARGS` for the human table; its lines."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.soimctl",
        *args,
        cwd=ROOT,
        env={**os.environ, **cluster.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode() + out.decode()
    return out.decode().splitlines()


@pytest.mark.timeout(150)
def test_every_soimctl_command(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            nodes = (
                cluster.start("directory")
                + cluster.start("router")
                + cluster.start("gateway", 2)
                + cluster.start("storage")
            )
            await cluster.wait_alive(nodes)

            listing = await soimctl(cluster, "nodes", "--wait", "10")
            assert {(n["role"], n["node_id"]) for n in listing["nodes"]} == {
                (n.role, n.node_id) for n in nodes
            }

            added = await soimctl(cluster, "user", "add", "opsuser", "--password", PASSWORD)
            assert added["account"] == "opsuser" and added["user_id"] > 0
            alice = await cluster.client(0)
            await alice.register("alice", PASSWORD)
            ops = await cluster.client(1)
            await ops.login("opsuser", PASSWORD)
            assert alice.user is not None
            online = await soimctl(cluster, "users")
            assert {u["account"] for u in online["users"]} == {"alice", "opsuser"}

            group = (await alice.group_create("ops-room")).group
            groups = await soimctl(cluster, "groups")
            assert [(g["group_id"], g["name"], g["members"]) for g in groups["groups"]] == [
                (group.group_id, "ops-room", 1)
            ]
            assert (await soimctl_table(cluster, "users"))[1] == "user_id | account"
            assert (await soimctl_table(cluster, "groups"))[1].startswith("group_id | name |")

            stats = await soimctl(cluster, "stats")
            rows = {r["node_id"]: r for r in stats["nodes"]}
            assert set(rows) == {n.node_id for n in nodes}
            assert all("error" not in r for r in rows.values())
            gateway_rows = [r for r in rows.values() if r["role"] == "gateway"]
            assert sum(r["rpc_served"] for r in gateway_rows) > 0

            shards = await soimctl(cluster, "shards")
            [database] = shards["databases"]
            assert database["schema_version"] == shards["schema_latest"]
            users = sum(t["rows"] for t in database["tables"] if t["logical"] == "user")
            assert users == 2

            disabled = await soimctl(cluster, "user", "disable", str(added["user_id"]))
            assert (disabled["user_id"], disabled["disabled"]) == (added["user_id"], True)
            with pytest.raises(RpcError) as err:
                await (await cluster.client(0)).login("opsuser", PASSWORD)
            assert err.value.code == pb.ACCOUNT_DISABLED

            # drain the gateway alice is on: she is sent to the other one and goes on working
            drained = next(
                p.node_id
                for p in cluster.view.membership.alive("gateway")
                if p.info.endpoints["client"] == alice.endpoint
            )
            reply = await soimctl(cluster, "drain", drained, "--grace", "3")
            assert reply["node_id"] == drained
            async with asyncio.timeout(10):
                while (await alice.events.get()).kind is not EventKind.REDIRECTED:
                    pass
            await async_wait_until(
                lambda: drained not in cluster.alive("gateway"),
                timeout=10,
                what="the drained gateway stops",
            )
            me = await alice.me()
            assert me.account == "alice" and me.gateway != drained
            assert next(n for n in nodes if n.node_id == drained).wait(5) == 0

    asyncio.run(main())
