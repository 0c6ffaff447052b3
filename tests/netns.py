"""Test support for multi-host tests: two network namespaces joined by a veth pair, and a probe.

Role: `two_hosts()` creates `soim-<rand>-a` and `soim-<rand>-b` with `ip netns add`, creates the
veth pair directly inside them (it never appears in the root namespace, whose interfaces and
routes are never touched), gives the ends 10.213.<rand>.1/24 and .2/24, brings lo and the ends
up, and deletes both namespaces (which deletes the pair) at the end, even on failure. `lan(n)`
does the same for n hosts joined by a bridge in a namespace of its own (10.214.<rand>.1..n).
Needs root and iproute2; a missing `ip` fails with a clear message, never a skip.

Run as `python -m tests.netns probe TARGET_ID EXPECT_ID [--timeout S]` inside a namespace, with
SOIM_HOST / SOIM_DISCOVERY_IFACES set to that namespace's veth address: it joins the cluster as
an observer (`tools.cluster_view.ClusterView`), waits until TARGET_ID and EXPECT_ID are alive,
then calls `fabric.Status` on TARGET_ID until its `peers_alive` holds EXPECT_ID, and prints one
JSON object: `{"alive": {node_id: endpoints}, "status": {node_id, peers_alive, endpoints}}`.
It exits 1 (with what it saw on stderr) if the deadline passes first.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

NETNS_DIR = "/run/netns"


@dataclass(frozen=True)
class Host:
    """One namespace: its name, its veth end and that end's IPv4 address."""

    ns: str
    veth: str
    addr: str

    def exec_prefix(self) -> list[str]:
        """The argv prefix that runs a command inside this namespace."""
        return ["ip", "netns", "exec", self.ns]

    def run(self, *argv: str, check: bool = True) -> str:
        """Run `argv` inside this namespace; return its stdout."""
        return ip_cmd(*self.exec_prefix(), *argv, check=check)


def ip_cmd(*argv: str, check: bool = True) -> str:
    """Run a command (normally `ip ...`); a failure raises with its stderr in the message."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def require_ip() -> None:
    """Fail (never skip) when iproute2 is missing."""
    if shutil.which("ip") is None:
        raise RuntimeError("multi-host tests need iproute2 (`ip`) and root: install iproute2")


@contextmanager
def two_hosts() -> Iterator[tuple[Host, Host]]:
    """Two fresh namespaces joined by a veth pair; both deleted at the end, whatever happens."""
    require_ip()
    tag = uuid.uuid4().hex[:6]
    subnet = f"10.213.{random.randint(0, 255)}"
    a = Host(f"soim-{tag}-a", f"sa-{tag}", f"{subnet}.1")
    b = Host(f"soim-{tag}-b", f"sb-{tag}", f"{subnet}.2")
    created: list[str] = []
    try:
        for host in (a, b):
            ip_cmd("ip", "netns", "add", host.ns)
            created.append(host.ns)
        # the pair is born inside the namespaces: nothing is added to the root namespace
        ip_cmd(
            "ip",
            "link",
            "add",
            a.veth,
            "netns",
            a.ns,
            "type",
            "veth",
            "peer",
            "name",
            b.veth,
            "netns",
            b.ns,
        )
        for host in (a, b):
            host.run("ip", "addr", "add", f"{host.addr}/24", "dev", host.veth)
            host.run("ip", "link", "set", "lo", "up")
            host.run("ip", "link", "set", host.veth, "multicast", "on")
            host.run("ip", "link", "set", host.veth, "up")
        yield a, b
    finally:
        errors = []
        for ns in created:
            try:
                ip_cmd("ip", "netns", "del", ns)  # deleting a namespace deletes its veth end
            except RuntimeError as err:
                errors.append(str(err))
        if errors:
            raise RuntimeError("; ".join(errors))


@contextmanager
def lan(count: int) -> Iterator[list[Host]]:
    """`count` fresh namespaces on one LAN: a bridge in a namespace of its own (the switch) and
    a veth pair from each host to it, all born inside the namespaces; deleted at the end."""
    require_ip()
    tag = uuid.uuid4().hex[:6]
    subnet = f"10.214.{random.randint(0, 255)}"
    switch = f"soim-{tag}-sw"
    hosts = [Host(f"soim-{tag}-{i}", f"h{i}-{tag}", f"{subnet}.{i + 1}") for i in range(count)]
    created: list[str] = []
    try:
        for ns in (switch, *(h.ns for h in hosts)):
            ip_cmd("ip", "netns", "add", ns)
            created.append(ns)
        ip_cmd("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        ip_cmd("ip", "-n", switch, "link", "set", "br0", "up")
        for i, host in enumerate(hosts):
            port = f"s{i}-{tag}"
            ip_cmd(
                "ip",
                "link",
                "add",
                host.veth,
                "netns",
                host.ns,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                switch,
            )
            ip_cmd("ip", "-n", switch, "link", "set", port, "master", "br0")
            ip_cmd("ip", "-n", switch, "link", "set", port, "up")
            host.run("ip", "addr", "add", f"{host.addr}/24", "dev", host.veth)
            host.run("ip", "link", "set", "lo", "up")
            host.run("ip", "link", "set", host.veth, "up")
        yield hosts
    finally:
        errors = []
        for ns in created:
            try:
                ip_cmd("ip", "netns", "del", ns)
            except RuntimeError as err:
                errors.append(str(err))
        if errors:
            raise RuntimeError("; ".join(errors))


def netns_inode(ns: str) -> int:
    """The inode of a named namespace, as /proc/<pid>/ns/net shows it for its processes."""
    return os.stat(f"{NETNS_DIR}/{ns}").st_ino


def process_netns_inode(pid: int) -> int:
    """The network namespace inode of a running process."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def link_names(host: Host | None = None) -> set[str]:
    """Interface names of a namespace (the root namespace when `host` is None)."""
    out = host.run("ip", "-o", "link", "show") if host else ip_cmd("ip", "-o", "link", "show")
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line}


def mdns_sockets(host: Host) -> list[tuple[str, int]]:
    """(local address, pid) of every UDP socket on port 5353 inside the namespace."""
    out = host.run("ss", "-H", "-u", "-a", "-n", "-p", "sport = :5353")
    found: list[tuple[str, int]] = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        local = fields[3].rsplit(":", 1)[0]
        users = line.split("pid=")[1:]
        pids = {int(u.split(",")[0]) for u in users}
        found += [(local, pid) for pid in sorted(pids)]
    return found


def group_members(host: Host, group: str = "224.0.0.251") -> set[str]:
    """The interfaces of the namespace on which `group` has been joined."""
    out = host.run("ip", "-4", "maddr", "show")
    current, members = "", set()
    for line in out.splitlines():
        if line and not line[0].isspace():
            current = line.split(":", 1)[1].strip()
        elif line.split()[-1:] == [group]:
            members.add(current)
    return members


# ---- the probe, run inside a namespace
async def _probe(target: str, expect: str, timeout: float) -> int:
    from fabric.config import Config
    from fabric.methods import STATUS, RpcError
    from schema import fabric_pb2
    from tools.cluster_view import ClusterView

    deadline = time.monotonic() + timeout
    async with ClusterView(Config.from_env(role="probe")) as view:
        alive: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline:
            alive = {p.node_id: dict(p.info.endpoints) for p in view.membership.alive()}
            if {target, expect} <= alive.keys():
                break
            await asyncio.sleep(0.05)  # polling the view until the deadline
        else:
            print(f"probe: alive {sorted(alive)}, want {target} and {expect}", file=sys.stderr)
            return 1
        peers: list[str] = []
        while time.monotonic() < deadline:
            try:
                status = await view.peers.get(target).call(
                    STATUS, fabric_pb2.StatusRequest(), timeout=2
                )
            except RpcError as err:
                print(f"probe: status of {target}: {err}", file=sys.stderr)
            else:
                peers = list(status.peers_alive)
                if expect in peers:
                    print(
                        json.dumps(
                            {
                                "alive": alive,
                                "status": {
                                    "node_id": status.node_id,
                                    "peers_alive": peers,
                                    "endpoints": dict(status.endpoints),
                                },
                            }
                        )
                    )
                    return 0
            await asyncio.sleep(0.05)  # polling the target until the deadline
        print(f"probe: {target} sees {peers}, want {expect}", file=sys.stderr)
        return 1


def main(argv: Sequence[str]) -> int:
    """`probe TARGET_ID EXPECT_ID [--timeout S]`."""
    if len(argv) not in (3, 5) or argv[0] != "probe" or (len(argv) == 5 and argv[3] != "--timeout"):
        print(__doc__, file=sys.stderr)
        return 2
    timeout = float(argv[4]) if len(argv) == 5 else 15.0
    return asyncio.run(_probe(argv[1], argv[2], timeout))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
