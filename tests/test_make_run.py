"""`make run` brings up the whole local cluster under honcho — 2 gateways, 2 routers, a
directory and a storage node on the embedded defaults — which `soimctl nodes` sees within 20 s;
the README's `curl …/gateways` lists both gateways' WebSocket URLs; a node killed with -9 is
started again (tools.keep_running) and the rest stay up; and Ctrl-C
stops it all cleanly. (The test points keys, data and gateway ports at its own tmp dir;
the .venv is the one `make test` made, so nothing is installed again.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.processes import ROOT
from tests.support import free_port, wait_until


@pytest.mark.timeout(90)
def test_make_run_starts_a_cluster_restarts_a_killed_node_and_ctrl_c_stops_it(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "SOIM_CLUSTER": f"run{uuid.uuid4().hex[:8]}",
        "SOIM_KEYS_DIR": str(tmp_path / "keys"),
        "SOIM_DB": f"sqlite:{tmp_path / 'data'}",
        "SOIM_GATEWAY1_PORT": str(free_port()),
        "SOIM_GATEWAY2_PORT": str(free_port()),
        "SOIM_GATEWAY1_WEB_PORT": str(free_port()),
        "SOIM_GATEWAY2_WEB_PORT": str(free_port()),
    }
    log = open(tmp_path / "make-run.log", "wb")  # noqa: SIM115 (closed below)
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = time.monotonic()
    try:

        def listing() -> list[tuple[str, str]]:
            out = subprocess.run(
                [sys.executable, "-m", "tools.soimctl", "nodes", "--json", "--wait", "3"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                timeout=30,
            )
            if out.returncode != 0:
                return []
            return sorted((n["role"], n["node_id"]) for n in json.loads(out.stdout)["nodes"])

        six = ["directory", "gateway", "gateway", "router", "router", "storage"]
        nodes = wait_until(
            lambda: (found := listing()) and [r for r, _ in found] == six and found,
            timeout=40,
            interval=0.2,
            what="the six nodes of make run",
        )
        assert time.monotonic() - started < 20 + 10, "nodes seen late (20 s + keys and start-up)"

        # the README's curl of the web port, on this test's port for 8080: both gateways listed
        web_port = env["SOIM_GATEWAY1_WEB_PORT"]
        curl = _readme_line("curl ").replace(":8080/", f":{web_port}/")
        urls = wait_until(
            lambda: (
                len(got := json.loads(subprocess.check_output(curl, shell=True))["gateways"]) == 2
                and got
            ),
            timeout=10,
            what="both gateways in /gateways",
        )
        assert urls[0] == f"ws://127.0.0.1:{web_port}/ws", urls

        # kill -9 one router: its Procfile entry starts it again, nothing else stops
        routers = {i for r, i in nodes if r == "router"}
        os.kill(_node_pids(env["SOIM_CLUSTER"], "router")[0], signal.SIGKILL)
        killed = time.monotonic()
        after = wait_until(
            lambda: (
                (found := listing())
                and [r for r, _ in found] == six
                and len({i for r, i in found if r == "router"} - routers) == 1
                and found
            ),
            timeout=30,
            interval=0.2,
            what="the router back",
        )
        print(f"killed router replaced in {time.monotonic() - killed:.1f} s")
        assert {i for r, i in after if r != "router"} == {i for r, i in nodes if r != "router"}
        assert make.poll() is None
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal
        assert make.wait(15) in (0, 2, 130, -signal.SIGINT)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(5)
        log.close()
    text = (tmp_path / "make-run.log").read_text(errors="replace")
    assert "soim" in text and "Ctrl-C" in text, text[-2000:]
    wait_until(
        lambda: not _survivors(env["SOIM_CLUSTER"]), timeout=10, what="every node process gone"
    )


def _readme_line(start: str) -> str:
    """The README's command line that starts with `start`, without its comment."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith(start):
            return line.split("#", 1)[0].strip()
    raise AssertionError(f"README.md has no line starting {start!r}")


def _node_pids(cluster: str, role: str) -> list[int]:
    """The node processes of `role` (not their keep_running supervisors) of the cluster."""
    pids = []
    for pid in _survivors(cluster):
        try:
            argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            role.encode() in argv
            and b"tools.keep_running" not in argv
            and any(a.endswith(b"soim-node") for a in argv)
        ):
            pids.append(pid)
    return pids


def _survivors(cluster: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"SOIM_CLUSTER={cluster}".encode() in (proc / "environ").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids
