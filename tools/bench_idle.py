"""`soimctl bench idle`: the memory of a whole idle `make run` cluster, process by process.

Role: one benchmark command. It starts the Procfile's cluster as `make run` does — honcho, a
keep_running supervisor in front of each of the six nodes, SQLite in var/data and keys in
var/keys under the working folder, zeroconf on 127.0.0.1 — in a temp folder with a cluster
name of its own and ephemeral ports, waits until every node is alive and answers /readyz with
200, lets it sit idle for --settle seconds, then reads /proc of honcho and every process under
it: VmRSS and the thread count from /proc/PID/status, PSS and USS (private clean + private
dirty) from /proc/PID/smaps_rollup. It prints them per process with the sums over all
processes and over the six nodes, stops the cluster as Ctrl-C does, and removes the folder.
Peer sockets: those of its `ClusterView` (zeroconf, events SUB); an HTTP GET of each node's
/readyz.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fabric import keys
from fabric.config import Config
from tools.cluster_view import ClusterView

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "Procfile"
ROLES = {"directory": 1, "router": 2, "storage": 1, "gateway": 2}
"""The nodes of the Procfile, by role."""
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
PORTS = {
    "SOIM_GATEWAY1_PORT": "0",
    "SOIM_GATEWAY2_PORT": "0",
    "SOIM_GATEWAY1_WEB_PORT": "0",
    "SOIM_GATEWAY2_WEB_PORT": "0",
}
"""The Procfile's fixed ports, made ephemeral so the bench runs beside a real `make run`."""
MB = 1024.0


class IdleBenchError(Exception):
    """The cluster did not come up, or a process could not be read."""


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _kb(value: str) -> int:
    return int(value.split()[0])


def process_memory(pid: int) -> dict[str, Any]:
    """RSS, PSS, USS (MB) and threads of one process, from /proc."""
    status = _status(pid)
    rollup: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        rollup[name] = _kb(value)
    return {
        "rss_mb": round(_kb(status["VmRSS"]) / MB, 1),
        "pss_mb": round(rollup["Pss"] / MB, 1),
        "uss_mb": round((rollup["Private_Clean"] + rollup["Private_Dirty"]) / MB, 1),
        "threads": int(status["Threads"]),
    }


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def process_tree(root: int) -> list[int]:
    """`root` and every process under it, parents first."""
    order, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        order.append(pid)
        todo += sorted(_children(pid))
    return order


def _name(pid: int) -> tuple[str, str]:
    """(kind, name) of a process of the cluster: ("node", role), ("supervisor", what)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    words = [Path(w.decode(errors="replace")).name for w in argv]
    if "soim-node" in words and "tools.keep_running" not in words:
        return "node", words[-1]
    if "tools.keep_running" in words:
        return "supervisor", f"keep_running {words[-1]}"
    if any(w == "honcho" for w in words[:2]):
        return "supervisor", "honcho"
    return "supervisor", words[0]


def measure_tree(root: int) -> dict[str, Any]:
    """Per-process memory of `root`'s tree, with sums over all and over the nodes."""
    processes = []
    for pid in process_tree(root):
        kind, name = _name(pid)
        processes.append({"pid": pid, "kind": kind, "name": name, **process_memory(pid)})
    counts = Counter(p["name"] for p in processes)
    seen: Counter[str] = Counter()
    for proc in processes:
        if counts[proc["name"]] > 1:
            seen[proc["name"]] += 1
            proc["name"] += f" #{seen[proc['name']]}"

    def total(rows: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: round(sum(r[k] for r in rows), 1) for k in ("rss_mb", "pss_mb", "uss_mb")
        }
        out["threads"] = sum(r["threads"] for r in rows)
        out["processes"] = len(rows)
        return out

    return {
        "processes": processes,
        "all": total(processes),
        "nodes": total([p for p in processes if p["kind"] == "node"]),
    }


def _cluster_env(folder: Path, cluster: str) -> dict[str, str]:
    """The caller's environment without its SOIM_* settings, as `make run` on defaults sees
    it: the venv first on PATH, a cluster of its own, ephemeral ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOIM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(PORTS, SOIM_CLUSTER=cluster, SOIM_ENV_FILE=os.devnull)
    return env


@contextmanager
def make_run(folder: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """honcho on the Procfile in `folder`, stopped as Ctrl-C stops `make run` on exit."""
    log = open(folder / "honcho.log", "wb")  # noqa: SIM115 (closed below)
    honcho = Path(sys.executable).parent / "honcho"
    proc = subprocess.Popen(
        [str(honcho), "start", "-f", str(PROCFILE), "-e", os.devnull],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _ready(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=2) as answer:
            return int(answer.status) == 200
    except (OSError, urllib.error.URLError):
        return False


async def wait_ready(cfg: Config, honcho: subprocess.Popen[bytes], folder: Path) -> None:
    """Until every node of ROLES is alive in a view of the cluster and ready; IdleBenchError
    with honcho's output if it exits or READY_TIMEOUT_S passes first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with ClusterView(cfg) as view:
        while True:
            alive = view.membership.alive()
            counts = {r: sum(p.role == r for p in alive) for r in ROLES}
            if counts == ROLES:
                checks = [
                    asyncio.to_thread(_ready, "127.0.0.1", p.info.metrics_port) for p in alive
                ]
                if all(await asyncio.gather(*checks)):
                    return
            if honcho.poll() is not None or time.monotonic() > deadline:
                tail = (folder / "honcho.log").read_text(errors="replace")[-3000:]
                raise IdleBenchError(f"the cluster was not ready ({counts}):\n{tail}")
            await asyncio.sleep(0.2)  # polling the view and /readyz until the deadline


def measure(settle_s: float) -> dict[str, Any]:
    """Start the cluster, wait until ready, sit `settle_s` idle, read the memory, stop."""
    folder = Path(tempfile.mkdtemp(prefix="soim-idle-"))
    try:
        keys.generate(folder / "var" / "keys")
        env = _cluster_env(folder, f"idle-{uuid.uuid4().hex[:10]}")
        cfg = Config.from_env(
            {**env, "SOIM_KEYS_DIR": str(folder / "var" / "keys")}, role="soimctl"
        )
        with make_run(folder, env) as honcho:
            asyncio.run(wait_ready(cfg, honcho, folder))
            time.sleep(settle_s)  # the idle period being measured, not a synchronisation
            result = measure_tree(honcho.pid)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["settle_s"] = settle_s
    result["note"] = (
        "rss_mb: VmRSS; pss_mb: proportional set size (shared pages split between the "
        "processes mapping them; the sum is the cluster's real footprint); uss_mb: pages "
        "only this process maps (private clean + dirty), from /proc/PID/smaps_rollup"
    )
    return result


def run(args: dict[str, Any]) -> int:
    """Entry point from soimctl: `bench idle [--json] [--settle S]`."""
    try:
        settle_s = float(args.get("--settle") or 3)
    except ValueError:
        settle_s = -1.0
    if settle_s < 0:
        print(f"soimctl: --settle must be seconds >= 0, got {args['--settle']!r}", file=sys.stderr)
        return 2
    try:
        result = measure(settle_s)
    except IdleBenchError as err:
        print(f"soimctl: {err}", file=sys.stderr)
        return 1
    if args.get("--json"):
        print(json.dumps(result))
        return 0
    print(f"{'process':<22} {'pid':>7} {'RSS MB':>7} {'PSS MB':>7} {'USS MB':>7} {'threads':>7}")
    for p in result["processes"]:
        print(
            f"{p['name']:<22} {p['pid']:>7} {p['rss_mb']:>7} {p['pss_mb']:>7} "
            f"{p['uss_mb']:>7} {p['threads']:>7}"
        )
    for label in ("nodes", "all"):
        t = result[label]
        print(
            f"{label + ' (' + str(t['processes']) + ')':<22} {'':>7} {t['rss_mb']:>7} "
            f"{t['pss_mb']:>7} {t['uss_mb']:>7} {t['threads']:>7}"
        )
    return 0
