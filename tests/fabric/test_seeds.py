"""Three hosts without multicast: real node processes in three network namespaces on one bridge
form one cluster through SOIM_SEEDS alone (SOIM_DISCOVERY=seeds: no mDNS socket exists), learn
the peers they were not told of from their seeds' heartbeats, two users on different hosts chat,
and after the first seed is killed a new node still joins through the second.

Hosts (`tests.netns.lan(3)`): A runs a router (seed 1, fixed RPC port), the directory and the
storage node; B a router (seed 2) and a gateway; C a gateway. Every node is given only the two
seeds. The observer in C (`python -m tests.netns probe`) sees C's gateway list A's directory,
which nobody told it of. Alice (soim --plain in B, gateway B) and Bob (in C, gateway C) become
friends and exchange a message each way.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fabric import keys
from tests.netns import Host, lan, mdns_sockets
from tests.processes import ROOT, NodeProcess, node_processes
from tests.tui.lines import LineClient

SEED_PORT = "7130"
GATEWAY_PORT = "7000"
PASSWORD = "correct-horse"
UID = re.compile(r"uid=(\d+), entryHost=.*")
ANY = re.compile(r".+")
PROBE_TIMEOUT_S = 30.0


def probe(
    host: Host, env: dict[str, str], target: str, expect: str, nodes: list[NodeProcess]
) -> None:
    """Inside `host`: wait until `target` is alive and its own view holds `expect`."""
    proc = subprocess.run(
        [
            *host.exec_prefix(),
            sys.executable,
            "-m",
            "tests.netns",
            "probe",
            target,
            expect,
            "--timeout",
            str(PROBE_TIMEOUT_S),
        ],
        env={**os.environ, **env},
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=PROBE_TIMEOUT_S + 20,
    )
    logs = "\n".join(f"--- {n.node_id}\n{n.log()[-2000:]}" for n in nodes)
    assert proc.returncode == 0, f"probe in {host.ns}: {proc.stderr}\n{logs}"


@pytest.mark.netns
@pytest.mark.timeout(180)
def test_three_hosts_form_a_cluster_through_seeds_only(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    with lan(3) as (a, b, c):
        base = {
            **cluster_env,
            "SOIM_DISCOVERY": "seeds",
            "SOIM_DB": f"sqlite:{tmp_path}/db",
            "SOIM_SCRYPT_N": "1024",
            "SOIM_SEEDS": f"{a.addr}:{SEED_PORT},{b.addr}:{SEED_PORT}",
        }

        def on(host: Host, **env: str) -> dict[str, str]:
            return {**base, "SOIM_HOST": host.addr, "SOIM_DISCOVERY_IFACES": host.addr, **env}

        with node_processes(cluster_env, tmp_path) as nodes:

            def start(role: str, host: Host, **env: str) -> NodeProcess:
                node = NodeProcess(role, on(host, **env), tmp_path, prefix=host.exec_prefix())
                nodes.append(node)
                return node

            seed1 = start("router", a, SOIM_RPC_PORT=SEED_PORT)
            directory, storage = start("directory", a), start("storage", a)
            start("router", b, SOIM_RPC_PORT=SEED_PORT)
            gateway_b = start("gateway", b, SOIM_GATEWAY_PORT=GATEWAY_PORT)
            gateway_c = start("gateway", c, SOIM_GATEWAY_PORT=GATEWAY_PORT)

            # C's gateway was told only of the two routers; it learns A's directory and
            # storage node from their heartbeats
            probe(c, on(c), gateway_c.node_id, directory.node_id, nodes)
            probe(c, on(c), gateway_c.node_id, storage.node_id, nodes)
            probe(b, on(b), gateway_b.node_id, directory.node_id, nodes)
            for host in (a, b, c):
                assert mdns_sockets(host) == [], "a node opened mDNS with SOIM_DISCOVERY=seeds"

            asyncio.run(chat(a, b, c, base, tmp_path))

            seed1.kill()
            late = start("storage", c)  # the first seed is dead: it joins through the second
            probe(c, on(c), late.node_id, gateway_b.node_id, nodes)
            probe(c, on(c), late.node_id, directory.node_id, nodes)


async def chat(a: Host, b: Host, c: Host, base: dict[str, str], tmp_path: Path) -> None:
    """Alice on B's gateway and Bob on C's become friends and exchange a message each way."""
    key = keys.load_client_plane_public(Path(base["SOIM_KEYS_DIR"])).decode()
    env = {"SOIM_CLUSTER": base["SOIM_CLUSTER"], "XDG_CONFIG_HOME": str(tmp_path / "config")}
    alice = LineClient(
        ["--server", f"tcp://{b.addr}:{GATEWAY_PORT}", "--server-key", key],
        tmp_path,
        "alice",
        prefix=b.exec_prefix(),
        env=env,
    )
    bob = LineClient(
        ["--server", f"tcp://{c.addr}:{GATEWAY_PORT}", "--server-key", key],
        tmp_path,
        "bob",
        prefix=c.exec_prefix(),
        env=env,
    )
    try:
        [m] = await alice.run(f"register -u alice -p {PASSWORD}", [UID], timeout=20)
        alice_id = m[1]
        [m] = await bob.run(f"register -u bob -p {PASSWORD}", [UID], timeout=20)
        bob_id = m[1]
        await bob.run(f"add -u {alice_id}", [f"friend request sent to {alice_id}"])
        await alice.expect([ANY])  # the friend request notice
        await alice.run(f"add -u {bob_id}", [f"friends now with {bob_id}"])
        await bob.expect([ANY])  # the acceptance notice
        await alice.run(f"send -u {bob_id} hello from b", [ANY], timeout=20)
        await bob.expect(["alice: hello from b"], timeout=20)
        await bob.run(f"send -u {alice_id} hello from c", [ANY], timeout=20)
        await alice.expect(["bob: hello from c"], timeout=20)
    finally:
        assert (alice.close(), bob.close()) == (0, 0)
