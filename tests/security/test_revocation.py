"""Revocation on a real cluster (two gateways): kick, disable and a password change end every
session of the user on both gateways within a second (a NOTICE_SESSION_ENDED push), and revoke
its tokens; Logout revokes its token; Resume rotates it (the old one resumes again only to the
same new token, within the reuse grace and while that one is unused). Legit users chat through
it all and lose nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fabric.methods import RpcError
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import DIRECTORY
from tests.harness import Cluster, running_cluster
from tests.security.chatter import Chatter
from tui.session import ClientSession, EventKind

PASSWORD = "correct horse"
END_WITHIN_S = 1.0


async def _session_ended(client: ClientSession, timeout: float) -> float:
    """Wait for the client's NOTICE_SESSION_ENDED; when it came (time.monotonic())."""
    async with asyncio.timeout(timeout):
        while True:
            event = await client.events.get()
            if (
                event.kind is EventKind.PUSH
                and event.push is not None
                and event.push.notice.kind == client_pb2.NOTICE_SESSION_ENDED
            ):
                return time.monotonic()


async def _on_both(cluster: Cluster, account: str, password: str = PASSWORD) -> list[ClientSession]:
    """The user logged in on each of the two gateways."""
    clients = [await cluster.client(gateway=g) for g in (0, 1)]
    for client in clients:
        await client.login(account, password)
    return clients


async def _resume_fails(cluster: Cluster, token: str) -> int:
    with pytest.raises(RpcError) as err:
        await (await cluster.client(gateway=1)).resume(token)
    return err.value.code


async def _directory(cluster: Cluster, name: str, request: object) -> object:
    assert cluster.view is not None
    peer = cluster.view.peers.get(cluster.alive("directory")[0])
    return await peer.call(DIRECTORY[name], request, timeout=5)


async def _ended_everywhere(cluster: Cluster, account: str, action: str, act: object) -> list[str]:
    """Log in on both gateways, run `act` (a coroutine function), assert both sessions end
    within END_WITHIN_S and both tokens are dead; the old tokens."""
    clients = await _on_both(cluster, account)
    tokens = [c.token for c in clients]
    started = time.monotonic()
    waits = [asyncio.ensure_future(_session_ended(c, 5.0)) for c in clients]
    await act()  # type: ignore[operator]
    took = max(await asyncio.gather(*waits)) - started
    print(f"{action}: sessions on both gateways ended in {took * 1000:.0f} ms")
    assert took < END_WITHIN_S, (action, took)
    for client in clients:
        with pytest.raises(RpcError):
            await client.call("Me", client_pb2.MeRequest(), timeout=2)
    return tokens


def _soimctl(cluster: Cluster, *args: str) -> dict[str, object]:
    env = {**os.environ, **cluster.env}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.soimctl",
            *args,
            "--json",
            "--cluster",
            cluster.env["SOIM_CLUSTER"],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return json.loads(out.stdout)


@pytest.mark.timeout(120)
def test_kick_disable_password_logout_and_rotation(tmp_path: Path, cluster_name: str) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, f"sqlite:{tmp_path}/db") as cluster:
            await cluster.start_all(gateways=2)
            me = await (await cluster.client()).register("victim", PASSWORD)
            uid = me.user_id
            async with Chatter(cluster):
                # kick: both sessions end, tokens die
                tokens = await _ended_everywhere(
                    cluster,
                    "victim",
                    "kick",
                    lambda: _directory(
                        cluster,
                        "EndSessions",
                        cluster_pb2.DirEndSessionsRequest(user_id=uid, reason="bye"),
                    ),
                )
                for token in tokens:
                    assert await _resume_fails(cluster, token) == pb.TOKEN_INVALID

                # disable: ended and revoked; login refused until enabled again
                disable = cluster_pb2.DirDisableRequest
                tokens = await _ended_everywhere(
                    cluster,
                    "victim",
                    "disable",
                    lambda: _directory(cluster, "SetDisabled", disable(user_id=uid, disabled=True)),
                )
                for token in tokens:
                    assert await _resume_fails(cluster, token) == pb.TOKEN_INVALID
                with pytest.raises(RpcError) as err:
                    await (await cluster.client()).login("victim", PASSWORD)
                assert err.value.code == pb.ACCOUNT_DISABLED
                enabled = await asyncio.to_thread(_soimctl, cluster, "user", "enable", str(uid))
                assert enabled["disabled"] is False

                # a new password: ended and revoked; the old password no longer works
                tokens = await _ended_everywhere(
                    cluster,
                    "victim",
                    "password change",
                    lambda: _directory(
                        cluster,
                        "SetPassword",
                        cluster_pb2.DirPasswordRequest(user_id=uid, password="a new password"),
                    ),
                )
                for token in tokens:
                    assert await _resume_fails(cluster, token) == pb.TOKEN_INVALID
                with pytest.raises(RpcError) as err:
                    await (await cluster.client()).login("victim", PASSWORD)
                assert err.value.code == pb.BAD_CREDENTIALS
                await (await cluster.client()).login("victim", "a new password")

                # logout revokes the token; resume rotates it
                client = await cluster.client(gateway=0)
                first = (await client.login("victim", "a new password")).token
                second = (await (await cluster.client(gateway=1)).resume(first)).token
                assert second != first
                # within the reuse grace the old token resumes to the same new one (a lost reply)
                assert (await (await cluster.client(gateway=1)).resume(first)).token == second
                leaving = await cluster.client(gateway=0)
                third = (await leaving.resume(second)).token
                assert await _resume_fails(cluster, first) == pb.TOKEN_INVALID
                await leaving.logout()
                for token in (third, second):
                    assert await _resume_fails(cluster, token) == pb.TOKEN_INVALID

                # soimctl user kick by account name; its errors come back as JSON too
                kicked = await asyncio.to_thread(_soimctl, cluster, "user", "kick", "victim")
                assert (kicked["user_id"], kicked["done"]) == (uid, "kick")
                missing = await asyncio.to_thread(_soimctl, cluster, "user", "kick", "nobody")
                assert missing["error"] == "NOT_FOUND"

    asyncio.run(main())
