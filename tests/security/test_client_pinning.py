"""The real `soim --plain` trusts only a pinned gateway key, against a real cluster and fake
gateway records announced over zeroconf by the test (the attacker on the discovery network).

Fakes: `FakeGateway` is a ZeroMQ ROUTER that is a Curve server with the attacker's own keypair
and records every frame it receives, announced as a gateway of the cluster naming the
attacker's key; `RawListener` is a plain TCP listener that records every byte sent to it,
announced as a gateway naming the cluster's real key (an attacker cannot complete a Curve
handshake for a key whose secret it lacks, so it can only listen). What is proved:
- with two fake records and one real gateway the client logs in through the real gateway, the
  fake ROUTER receives no frame and the raw listener never sees the password;
- with a pinned key and only fake records (or a --server that is a fake) the client refuses
  loudly (the key seen, the file the pin comes from) and exits 1, having sent nothing;
- first use remembers the cluster's key in known_gateways (0600) and says so with its
  fingerprint (on stderr in --plain, on the screen of the full-screen client); a later change
  of that key is refused loudly and the file is left alone;
- a login redirect and a drain redirect to a gateway holding another key are not followed;
  one to a gateway holding the pinned key is (and the session works there).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
import zmq.auth

from fabric import keys
from fabric.config import Config
from fabric.discovery import Discovery, NodeInfo
from tests.cluster.test_storage import metric
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until
from tests.tui.lines import LineClient
from tests.tui.terminal import ROOT, SOIM, Tmux
from tui.known_keys import fingerprint

PASSWORD = "pinned-horse-battery"
GATEWAYS_SEEN = 'soim_peers_alive{role="gateway"}'


class FakeGateway:
    """An attacker's gateway: a Curve ROUTER with its own keypair, recording every frame, and
    a zeroconf record announcing it as a gateway of `cluster` that names `named_key` (default:
    the attacker's own public key)."""

    def __init__(self, ctx: zmq.asyncio.Context, cluster: str, node_id: str) -> None:
        self.public, secret = zmq.curve_keypair()
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.curve_server = True
        self.sock.curve_secretkey = secret
        self.sock.curve_publickey = self.public
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.frames: list[list[bytes]] = []
        self.cluster, self.node_id = cluster, node_id
        self._task = asyncio.ensure_future(self._record())
        self.discovery: Discovery | None = None

    async def _record(self) -> None:
        while True:
            self.frames.append(await self.sock.recv_multipart())

    async def announce(self, named_key: bytes | None = None) -> None:
        self.discovery = await announce(
            self.cluster, self.node_id, self.endpoint, (named_key or self.public).decode()
        )

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self.discovery is not None:
            await self.discovery.async_close()
        self.sock.close(linger=0)


class RawListener:
    """A TCP listener that records every byte any client sends it and never answers."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.endpoint = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.endpoint = f"tcp://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while chunk := await reader.read(65536):
            self.received += chunk
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def announce(cluster: str, node_id: str, endpoint: str, client_key: str) -> Discovery:
    """A zeroconf record saying a gateway `node_id` of `cluster` is at `endpoint`."""
    discovery = Discovery(Config(cluster=cluster, node_id=node_id), _ignore, _ignore, _ignore)
    await discovery.async_start()
    port = int(endpoint.rsplit(":", 1)[1])
    await discovery.async_register(
        NodeInfo(
            node_id=node_id,
            role="gateway",
            cluster=cluster,
            version="0.1.0",
            host="127.0.0.1",
            endpoints={
                "client": endpoint,
                "rpc": f"tcp://127.0.0.1:{port}",
                "events": f"tcp://127.0.0.1:{port}",
            },
            metrics_port=9100,
            public_key=client_key,
            client_key=client_key,
            started_at=time.time(),
        )
    )
    return discovery


def _ignore(info: NodeInfo) -> None:
    """Discovery callbacks of the fakes: they only announce."""


def client_env(cluster: str, keys_dir: Path, config_home: Path) -> dict[str, str]:
    """A soim environment: the cluster, where its keys are (may be absent), a private config
    dir (so the user's real known_gateways is never read or written)."""
    return {
        **os.environ,
        "SOIM_CLUSTER": cluster,
        "SOIM_KEYS_DIR": str(keys_dir),
        "XDG_CONFIG_HOME": str(config_home),
    }


async def soim(
    env: dict[str, str], script: str, *args: str, timeout: float = 25.0
) -> tuple[int, str, str]:
    """Run `soim --plain ARGS` with `script` on stdin; (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *SOIM,
        "--plain",
        *args,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(script.encode()), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def real_host(cluster: Cluster) -> str:
    return cluster.gateways()[0][0].removeprefix("tcp://")


async def one_gateway_cluster(cluster: Cluster) -> None:
    nodes = (
        cluster.start("directory")
        + cluster.start("router")
        + cluster.start("gateway")
        + cluster.start("storage")
    )
    await cluster.wait_alive(nodes)


@pytest.mark.timeout(60)
def test_fake_gateway_records_get_no_credentials(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        ctx = zmq.asyncio.Context()
        router = FakeGateway(ctx, cluster_name, "gateway-fake-router")
        raw = RawListener()
        try:
            async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
                await one_gateway_cluster(cluster)
                real_key = keys.load_client_plane_public(cluster.keys_dir)
                await raw.start()
                await router.announce()
                raw_record = await announce(
                    cluster_name, "gateway-fake-raw", raw.endpoint, real_key.decode()
                )
                try:
                    env = client_env(cluster_name, cluster.keys_dir, tmp_path / "config")
                    scripts = [f"register -u alice -p {PASSWORD}"] + [
                        f"login -u alice -p {PASSWORD}"
                    ] * 2
                    # three runs: a client picking a record at random reaches a fake by then
                    runs = [await soim(env, script) for script in scripts]
                    host = real_host(cluster)
                finally:
                    await raw_record.async_close()
            assert router.frames == [], f"the fake gateway received {router.frames}"
            assert PASSWORD.encode() not in raw.received
            for code, out, err in runs:
                assert code == 0, err
                assert f"entryHost={host}" in out, (out, err)
            # loud about a record naming another key (each run browses afresh: under load a
            # record may resolve only after the client has picked its gateway)
            assert any(
                f"record gateway-fake-router at {router.endpoint} names another key" in err
                for _, _, err in runs
            ), runs
            assert not (tmp_path / "config" / "soim" / "known_gateways").exists()
        finally:
            await router.close()
            await raw.close()
            ctx.destroy(linger=0)

    asyncio.run(main())


@pytest.mark.timeout(40)
def test_a_pinned_key_and_only_fake_gateways_is_a_loud_refusal(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        keys_dir = tmp_path / "keys"
        keys.generate(keys_dir)
        pinned = keys.load_client_plane_public(keys_dir)
        ctx = zmq.asyncio.Context()
        fake = FakeGateway(ctx, cluster_name, "gateway-fake")
        try:
            await fake.announce()
            env = client_env(cluster_name, keys_dir, tmp_path / "config")
            started = time.monotonic()
            code, out, err = await soim(env, f"login -u alice -p {PASSWORD}")
            assert fake.frames == [], f"the fake gateway received {fake.frames}"
            assert code == 1, (out, err)
            assert time.monotonic() - started < 15
            assert err.startswith("soim: REFUSED: no gateway of cluster"), err
            assert pinned.decode() in err and str(keys_dir / "gateway.key") in err, err
            assert fake.public.decode() in err and fake.endpoint in err, err
            assert out == ""

            # --server at the fake, with the pinned key: refused at once, nothing sent
            code, out, err = await soim(
                env,
                f"login -u alice -p {PASSWORD}",
                "--server",
                fake.endpoint,
                "--server-key",
                pinned.decode(),
            )
            assert code == 1, (out, err)
            assert err.startswith(f"soim: REFUSED: the gateway at {fake.endpoint}"), err
            assert "--server-key" in err and out == ""
        finally:
            await fake.close()
            ctx.destroy(linger=0)
        assert fake.frames == []

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_first_use_is_remembered_and_a_changed_key_is_refused(
    tmp_path: Path, cluster_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await one_gateway_cluster(cluster)
            real_key = keys.load_client_plane_public(cluster.keys_dir)

            # the full-screen client says it on its screen (its own config dir)
            for name, value in client_env(
                cluster_name, tmp_path / "no-keys", tmp_path / "tui-config"
            ).items():
                monkeypatch.setenv(name, value)  # the tmux server passes them on to soim
            tmux = Tmux(tmp_path)
            try:
                tmux.start("tui", [])
                await tmux.wait("tui", rf"first connection to cluster '{cluster_name}'")
            finally:
                tmux.close()
            assert (
                tmp_path / "tui-config" / "soim" / "known_gateways"
            ).read_text() == f"{cluster_name} {real_key.decode()}\n"
            env = client_env(cluster_name, tmp_path / "no-keys", tmp_path / "config")
            known = tmp_path / "config" / "soim" / "known_gateways"

            code, out, err = await soim(env, f"register -u carol -p {PASSWORD}")
            assert code == 0, err
            assert f"entryHost={real_host(cluster)}" in out
            assert f"first connection to cluster {cluster_name!r}" in err, err
            assert real_key.decode() in err and fingerprint(real_key) in err
            assert str(known) in err
            assert known.read_text() == f"{cluster_name} {real_key.decode()}\n"
            assert stat.S_IMODE(known.stat().st_mode) == 0o600

            code, out, err = await soim(env, f"login -u carol -p {PASSWORD}")
            assert code == 0 and "first connection" not in err, err
            assert f"entryHost={real_host(cluster)}" in out

            # the key remembered differs from what the cluster's gateway holds now
            old_key = zmq.curve_keypair()[0]
            while b"#" not in old_key:  # '#' is a Z85 character, not a comment there
                old_key = zmq.curve_keypair()[0]
            known.write_text(f"{cluster_name} {old_key.decode()}\n")
            code, out, err = await soim(env, f"login -u carol -p {PASSWORD}")
            assert code == 1, (out, err)
            assert err.startswith("soim: REFUSED"), err
            assert old_key.decode() in err and real_key.decode() in err
            assert str(known) in err and "delete the line" in err, err
            assert known.read_text() == f"{cluster_name} {old_key.decode()}\n"
            assert out == ""

    asyncio.run(main())


@pytest.mark.timeout(90)
def test_a_redirect_to_a_gateway_with_another_key_is_not_followed(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            other_keys = tmp_path / "other-keys"  # the cluster's keys, another gateway key
            shutil.copytree(cluster.keys_dir, other_keys)
            zmq.auth.create_certificates(other_keys, keys.CLIENT_PLANE)
            [home] = cluster.start("gateway")
            [stranger] = cluster.start("gateway", SOIM_KEYS_DIR=str(other_keys))
            nodes = [
                home,
                stranger,
                *cluster.start("directory"),
                *cluster.start("router"),
                *cluster.start("storage"),
            ]
            await cluster.wait_alive(nodes)
            gateways = {p.node_id: p for p in cluster.view.membership.alive("gateway")}
            home_ep = gateways[home.node_id].info.endpoints["client"]
            stranger_ep = gateways[stranger.node_id].info.endpoints["client"]
            home_index = [ep for ep, _ in cluster.gateways()].index(home_ep)

            # enough sessions on `home` that a login there is redirected to `stranger` (one
            # at a time: logins from one address may not queue up for the password hash)
            for i in range(21):
                await (await cluster.client(home_index)).register(f"filler{i}", PASSWORD)

            pinned = keys.load_client_plane_public(cluster.keys_dir).decode()
            dave = LineClient(["--server", home_ep, "--server-key", pinned], tmp_path, "dave")
            try:
                dave.send(f"register -u dave -p {PASSWORD}")
                await until_line(dave, "uid=", f"entryHost={home_ep.removeprefix('tcp://')}")
                await until_line(dave, "* not following a redirect", stranger_ep)

                reply = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "tools.soimctl",
                        "drain",
                        home.node_id,
                        "--grace",
                        "30",
                        "--json",
                    ],
                    cwd=ROOT,
                    env={**os.environ, **cluster.env},
                    capture_output=True,
                    timeout=30,
                )
                assert reply.returncode == 0, reply.stderr
                await until_line(dave, "* gateway draining")
                await until_line(dave, "* not following a redirect", stranger_ep, count=2)
                dave.send("me")
                await until_line(dave, "uid | account")
                assert not any("moved to" in line for line in dave.lines), dave.lines
                peer = cluster.view.membership.get(stranger.node_id)
                assert peer is not None and peer.sessions == 0
            finally:
                assert dave.close() == 0, dave.stderr()

    asyncio.run(main())


@pytest.mark.timeout(90)
def test_a_redirect_to_a_gateway_with_the_pinned_key_is_followed(
    tmp_path: Path, cluster_name: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            # the fillers first, while home is the only gateway: with the twin up, home would
            # send some of them there (the balance the redirect keeps), and erin's turn would
            # depend on when each gateway's count reached the other
            [home] = cluster.start("gateway")
            await cluster.wait_alive(
                [
                    home,
                    *cluster.start("directory"),
                    *cluster.start("router"),
                    *cluster.start("storage"),
                ]
            )
            for i in range(21):
                await (await cluster.client(0)).register(f"filler{i}", PASSWORD)
            [twin] = cluster.start("gateway")
            await cluster.wait_alive([twin])
            await async_wait_until(
                lambda: asyncio.to_thread(metric, cluster, home.node_id, GATEWAYS_SEEN),
                timeout=20,
                interval=0.2,
                what="home admitting the twin",
            )
            gateways = {p.node_id: p for p in cluster.view.membership.alive("gateway")}
            home_ep = gateways[home.node_id].info.endpoints["client"]
            twin_host = gateways[twin.node_id].info.endpoints["client"].removeprefix("tcp://")
            pinned = keys.load_client_plane_public(cluster.keys_dir).decode()
            erin = LineClient(["--server", home_ep, "--server-key", pinned], tmp_path, "erin")
            try:
                erin.send(f"register -u erin -p {PASSWORD}")
                await until_line(erin, "uid=", f"entryHost={twin_host}")
                await until_line(erin, f"* moved to {twin_host}")
                erin.send("me")
                await until_line(erin, "| erin")
                assert not any("not following" in line for line in erin.lines), erin.lines
            finally:
                assert erin.close() == 0, erin.stderr()

    asyncio.run(main())


async def until_line(client: LineClient, *parts: str, count: int = 1) -> None:
    """Wait until `count` lines of the client's output contain every one of `parts`."""
    await async_wait_until(
        lambda: sum(all(p in line for p in parts) for line in client.lines) >= count,
        timeout=30,
        what=f"{count} line(s) with {parts}: {client.lines} {client.stderr()}",
    )
