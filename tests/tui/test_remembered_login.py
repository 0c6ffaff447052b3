"""A remembered login, with the real `soim` (in --plain and full-screen in tmux) against a
cluster of real node processes: a restart resumes the session without a password (and stores
the rotated token), `--account` picks among several remembered accounts (else the last used
one), `soim --logout` and `/logout` end the session on the server (the old token is refused
from then on) and forget it; the sessions file is private (0600 in a 0700 directory); the
config file sets the device, a bad key in it is one line and exit 2, and the example the
README shows loads."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from fabric.methods import RpcError
from tests.harness import Cluster, running_cluster
from tests.support import async_wait_until
from tests.tui.lines import LineClient
from tests.tui.terminal import ROOT, SOIM, Tmux
from tests.tui.test_plain import PASSWORD, server_args
from tui import config_file
from tui.known_keys import fingerprint
from tui.token_store import FILE_NAME, TokenStore

ME = re.compile(r"(\d+) \| (\S+)")


@pytest.mark.timeout(120)
def test_restart_resumes_and_logout_revokes(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await cluster.start_all()
            await plain_client(cluster, tmp_path / "laptop")
            tmux = Tmux(tmp_path)
            try:
                await full_screen(cluster, tmux, Path(os.environ["XDG_CONFIG_HOME"]))
            finally:
                tmux.close()

    asyncio.run(main())


def store_of(cluster: Cluster, config: Path) -> tuple[TokenStore, str]:
    return TokenStore(config / "soim" / FILE_NAME), fingerprint(cluster.gateways()[0][1])


def plain(cluster: Cluster, config: Path, name: str, args: tuple[str, ...] = ()) -> LineClient:
    """`soim --plain` with the config dir `config`."""
    return LineClient(
        [*server_args(cluster, 0), *args], config, name, env={"XDG_CONFIG_HOME": str(config)}
    )


async def soim_plain(
    cluster: Cluster, config: Path, script: list[str], args: tuple[str, ...] = (), status: int = 0
) -> tuple[list[str], str]:
    """Run `soim --plain` on `script` with the config dir `config`: (stdout lines, stderr)."""
    client = plain(cluster, config, f"soim{len(script)}", args)
    for line in script:
        client.send(line)
    assert client.close(20) == status, client.stderr()
    return client.lines, client.err_path.read_text()


async def refused(cluster: Cluster, token: str) -> bool:
    """Is `token` refused by the cluster now?"""
    probe = await cluster.client(0, device="probe")
    try:
        await probe.resume(token)
    except RpcError:
        return True
    finally:
        await probe.close()
    return False


async def plain_client(cluster: Cluster, config: Path) -> None:
    config.mkdir()
    store, fp = store_of(cluster, config)
    out, _ = await soim_plain(cluster, config, [f"register -u alice -p {PASSWORD}"])
    assert re.fullmatch(r"uid=\d+, entryHost=.*", out[0]), out
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    first = store.lookup(fp)
    assert first is not None and first[0] == "alice"

    # a restart: no password, the same account; the token was rotated and stored again
    out, err = await soim_plain(cluster, config, ["me"])
    assert ME.fullmatch(out[1])[2] == "alice", out  # type: ignore[index]
    assert "logged in as alice" in err and "remembered login" in err, err
    second = store.lookup(fp)
    assert second is not None and second[1] != first[1]

    # two accounts: the last used one, unless --account names the other
    await soim_plain(cluster, config, [f"register -u bob -p {PASSWORD}"])
    out, _ = await soim_plain(cluster, config, ["me"])
    assert ME.fullmatch(out[1])[2] == "bob", out  # type: ignore[index]
    out, _ = await soim_plain(cluster, config, ["me"], ("--account", "alice"))
    assert ME.fullmatch(out[1])[2] == "alice", out  # type: ignore[index]
    assert await refused(cluster, first[1])  # spent: its successor was used since

    # a second soim leaves alone the remembered login a running one uses (resuming it would
    # spend the running one's token and so end its session)
    holder = plain(cluster, config, "holder")
    try:
        await holder.run("me", ["uid | account", re.compile(r"\d+ \| alice")])
        held = store.lookup(fp, "alice")
        out, _ = await soim_plain(cluster, config, ["me"], status=1)
        assert out[0].startswith("Unauthenticated"), out
        assert logout(cluster, config, "alice").stdout == (
            "the remembered login of alice is in use by a running soim; /logout there\n"
        )
        assert store.lookup(fp, "alice") == held
        await holder.run("me", ["uid | account", re.compile(r"\d+ \| alice")])

        # its token used elsewhere (stolen): the cluster ends its session; it says so, and
        # forgets the spent token
        assert held is not None and not await refused(cluster, held[1])
        await async_wait_until(
            lambda: any("log in again" in line for line in holder.lines),
            timeout=15,
            what="the end of the session",
        )
        assert store.lookup(fp, "alice") is None
        holder.read = len(holder.lines)
        await holder.run("me", [re.compile("Unauthenticated.*")])
    finally:
        holder.close()
    await soim_plain(cluster, config, [f"login -u alice -p {PASSWORD}"])  # remembered again

    # soim --logout ends alice's session on the server and forgets it; bob's stays
    alice = store.lookup(fp, "alice")
    assert alice is not None
    done = logout(cluster, config, "alice")
    assert done.stdout == "logged out alice; the remembered login is revoked and forgotten\n"
    assert store.lookup(fp, "alice") is None and store.lookup(fp) is not None
    assert await refused(cluster, alice[1])
    assert logout(cluster, config, "alice").stdout == "no remembered login to end for alice\n"

    # the config file: the device name; a bad key is one line, exit 2
    (config / "soim" / "config.toml").write_text('[client]\ndevice = "laptop"\n')
    out, _ = await soim_plain(cluster, config, ["me"])
    assert ME.fullmatch(out[1])[2] == "bob", out  # type: ignore[index]
    (config / "soim" / "config.toml").write_text("[client]\ndevise = 'laptop'\n")
    bad = subprocess.run(
        [*SOIM, "--plain"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CONFIG_HOME": str(config)},
        stdin=subprocess.DEVNULL,
        timeout=20,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "unknown key client.devise" in bad.stderr


def logout(cluster: Cluster, config: Path, account: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*SOIM, "--logout", "--account", account, *server_args(cluster, 0)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "XDG_CONFIG_HOME": str(config)},
    )
    assert done.returncode == 0, done.stderr
    return done


async def full_screen(cluster: Cluster, tmux: Tmux, config: Path) -> None:
    """The full-screen client: /exit keeps the login, /logout ends it."""
    store, fp = store_of(cluster, config)
    header = r"^ so-im │ carol \(uid (\d+)\) │ [\d.]+:\d+ │ online"
    tmux.start("carol", server_args(cluster, 0))
    uid = await tmux.register("carol", "Carol", PASSWORD)
    await quit_client(tmux)

    tmux.start("carol", server_args(cluster, 0))  # nothing typed: resumed
    match = await tmux.wait("carol", header)
    assert int(match[1]) == uid
    token = store.lookup(fp, "carol")
    assert token is not None
    tmux.type("carol", "/logout")
    await tmux.wait("carol", r"logged out; the remembered login is forgotten")
    assert store.lookup(fp, "carol") is None
    assert await refused(cluster, token[1])
    await quit_client(tmux)

    tmux.start("carol", server_args(cluster, 0))
    await tmux.wait("carol", r"log in:    /login")
    assert not re.search(header, tmux.screen("carol"), re.MULTILINE)


async def quit_client(tmux: Tmux) -> None:
    """/exit in window carol; once the client has exited, the window goes too."""
    tmux.type("carol", "/exit")
    await async_wait_until(lambda: tmux.dead("carol"), what="soim to exit")
    tmux.tmux("kill-session", "-t", "carol")


def test_the_readme_config_example_is_valid(tmp_path: Path) -> None:
    """The config.toml the README shows loads, every key as written."""
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```toml\n(.*?)```", readme, re.DOTALL)
    assert example is not None
    path = tmp_path / "config.toml"
    path.write_text(example[1])
    loaded = config_file.load(path)
    assert (loaded.endpoint, loaded.device, loaded.account, loaded.remember) == (
        "tcp://127.0.0.1:7000",
        "laptop",
        "alice",
        True,
    )
    assert loaded.colours == {"own": "green"} and loaded.notify.bell and loaded.notify.title
