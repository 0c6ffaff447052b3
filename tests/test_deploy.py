"""Deployable nodes: the `soim-node ROLE` console script and the systemd unit template.

`soim-node` with a bad role exits 2 with its usage; `soim-node router` started as an installed
operator would (fixed ports, the venv's console script) joins the cluster on exactly those
ports and stops cleanly on SIGTERM; deploy/systemd/soim-node@.service, rendered with this
venv's soim-node, passes `systemd-analyze verify` without a warning, keeps every sandboxing
option and scores an exposure of at most 2.0 in `systemd-analyze security`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from schema.contracts.roles import ROLES
from tests.harness import running_cluster
from tests.processes import ROOT
from tests.support import async_wait_until, free_port

SOIM_NODE = Path(sys.executable).parent / "soim-node"
UNIT = ROOT / "deploy" / "systemd" / "soim-node@.service"
INSTALLED_PATH = "/opt/soim/bin/soim-node"
SANDBOXING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "StateDirectory=soim",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    "SystemCallFilter=@system-service",
    "CapabilityBoundingSet=",
    "Restart=on-failure",
    "EnvironmentFile=/etc/soim/soim.env",
    "User=soim",
)
MAX_EXPOSURE = "20"
"""`systemd-analyze security --threshold`: tenths of the 0-10 exposure scale (2.0)."""


def test_soim_node_rejects_a_bad_role_with_its_usage() -> None:
    assert SOIM_NODE.is_file(), f"{SOIM_NODE} missing: make test installs the console scripts"
    for args in (["bogus"], [], ["router", "extra"]):
        out = subprocess.run([str(SOIM_NODE), *args], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2, (args, out)
        assert "usage: soim-node ROLE" in out.stderr and out.stdout == ""
    assert (
        "unknown role 'bogus'"
        in subprocess.run(
            [str(SOIM_NODE), "bogus"], capture_output=True, text=True, timeout=30
        ).stderr
    )
    helped = subprocess.run([str(SOIM_NODE), "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0
    assert all(role in helped.stdout for role in ROLES)
    assert all(
        var in helped.stdout
        for var in ("SOIM_RPC_PORT", "SOIM_EVENTS_PORT", "SOIM_METRICS_PORT", "SOIM_GATEWAY_PORT")
    )


@pytest.mark.timeout(60)
def test_soim_node_router_serves_on_fixed_ports(tmp_path: Path) -> None:
    asyncio.run(_router_on_fixed_ports(tmp_path))
    assert "Traceback" not in (tmp_path / "soim-node.log").read_text(errors="replace")


async def _router_on_fixed_ports(tmp_path: Path) -> None:
    async with running_cluster(
        tmp_path, f"t{uuid.uuid4().hex[:12]}", f"sqlite:{tmp_path / 'data'}"
    ) as cluster:
        ports = {
            "SOIM_RPC_PORT": free_port(),
            "SOIM_EVENTS_PORT": free_port(),
            "SOIM_METRICS_PORT": free_port(),
        }
        node_id = f"router-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            **cluster.env,
            **{k: str(v) for k, v in ports.items()},
            "SOIM_NODE_ID": node_id,
            "PYTHONUNBUFFERED": "1",
        }
        with open(tmp_path / "soim-node.log", "wb") as log:
            proc = subprocess.Popen(
                [str(SOIM_NODE), "router"],
                env=env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                peer = await async_wait_until(
                    lambda: next(
                        (
                            p
                            for p in cluster.view.membership.alive("router")
                            if p.node_id == node_id
                        ),
                        None,
                    ),
                    timeout=20,
                    what="soim-node router alive in the membership",
                )
                assert peer.info.endpoints["rpc"] == f"tcp://127.0.0.1:{ports['SOIM_RPC_PORT']}"
                assert peer.info.endpoints["events"] == (
                    f"tcp://127.0.0.1:{ports['SOIM_EVENTS_PORT']}"
                )
                assert peer.info.metrics_port == ports["SOIM_METRICS_PORT"]
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(10) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)


def test_systemd_unit_verifies_and_is_sandboxed(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: make test installs systemd (tools/ensure_services.sh)"
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_PATH} %i" in text
    lines = set(text.splitlines())
    assert [opt for opt in SANDBOXING if opt not in lines] == []
    (tmp_path / UNIT.name).write_text(text.replace(INSTALLED_PATH, str(SOIM_NODE)))
    for role in ROLES:
        unit = f"./soim-node@{role}.service"
        verify = subprocess.run(
            [analyze, "verify", "--man=no", unit],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", ""), verify
    security = subprocess.run(
        [
            analyze,
            "security",
            "--offline=yes",
            f"--threshold={MAX_EXPOSURE}",
            "./soim-node@router.service",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert security.returncode == 0, security.stdout[-1500:] + security.stderr
    assert "Overall exposure level" in security.stdout
