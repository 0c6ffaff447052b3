"""The token reuse grace on a real cluster (two directories; SQLite and MariaDB): a resume whose
reply was lost — the directory rotated the token, the client never heard — is repeated with the
same token and gets the same successor, so the client keeps its session and the chain does not
fork, even when the repeats race on both directories. Once the successor was resumed, or the
grace passed, or the token or its user was revoked, the old token is refused; the gateways'
token audit still ends a session whose token was rotated elsewhere or revoked.

Peer sockets: the test's observer view (RPCs to the directories) and clients of the gateway.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from google.protobuf.message import Message

from fabric import timing
from fabric.methods import RpcError
from nodes.directory.options import TOKEN_REUSE_GRACE_DEFAULT_S
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb
from schema.contracts.directory import DIRECTORY
from shard_store.settings import StoreSettings
from shard_store.store import Store
from tests.harness import Cluster, running_cluster
from tui.session import ClientSession, EventKind

PASSWORD = "correct horse"


@pytest.fixture(params=["sqlite", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SOIM_DB: embedded SQLite, or a fresh MariaDB database."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'data'}"
    return str(request.getfixturevalue("mysql_db"))


async def _call(cluster: Cluster, name: str, request: Message, directory: int = 0) -> Message:
    assert cluster.view is not None
    peer = cluster.view.peers.get(sorted(cluster.alive("directory"))[directory])
    return await peer.call(DIRECTORY[name], request, timeout=5)


async def _verify(cluster: Cluster, token: str, directory: int = 0) -> str:
    """The directory's resume of `token` (VerifyToken): the token it hands out."""
    reply = await _call(cluster, "VerifyToken", cluster_pb2.DirTokenRequest(token=token), directory)
    assert isinstance(reply, cluster_pb2.DirAuthReply)
    return reply.token


async def _resumed(client: ClientSession, token: str) -> str:
    """A client's Resume with `token`: the token its session now holds."""
    return (await client.resume(token)).token


async def _refused(cluster: Cluster, token: str) -> int:
    with pytest.raises(RpcError) as err:
        await _verify(cluster, token)
    return err.value.code


async def _session_ended(client: ClientSession, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            event = await client.events.get()
            if (
                event.kind is EventKind.PUSH
                and event.push is not None
                and event.push.notice.kind == client_pb2.NOTICE_SESSION_ENDED
            ):
                return


def _age_claims(cluster: Cluster, user_id: int, by_s: int) -> int:
    """Move the user's claim times `by_s` into the past (as if that time had passed)."""
    with Store.from_settings(StoreSettings.from_env(cluster.env)) as store:
        return store.execute(
            "token",
            user_id,
            "UPDATE {t} SET claimed = claimed - %s WHERE user_id = %s AND claimed > 0",
            (by_s * 1000, user_id),
        )


@pytest.mark.timeout(120)
def test_a_lost_resume_reply_is_repeated_without_forking(
    tmp_path: Path, cluster_name: str, db_url: str
) -> None:
    async def main() -> None:
        async with running_cluster(tmp_path, cluster_name, db_url) as cluster:
            nodes = await cluster.start_all()
            await cluster.wait_alive(cluster.start("directory"))
            assert len(cluster.alive("directory")) == 2 and nodes
            alice = await cluster.client()
            uid = (await alice.register("alice", PASSWORD)).user_id
            first = alice.token

            # the reply of a resume is lost; the repeat gets the same successor, and so does a
            # resume through a gateway: a working session
            lost = await _verify(cluster, first)
            assert lost != first
            assert await _verify(cluster, first, directory=1) == lost
            again = await cluster.client()
            assert (await again.resume(first)).token == lost
            me = await again.call("Me", client_pb2.MeRequest(), timeout=5)
            assert me.account == "alice"

            # repeats racing on both directories and in one gateway batch: one chain
            token = (await (await cluster.client()).login("alice", PASSWORD)).token
            racing = [_verify(cluster, token, directory=i % 2) for i in range(6)]
            clients = [await cluster.client() for _ in range(3)]
            got = await asyncio.gather(*racing, *(_resumed(c, token) for c in clients))
            tokens = set(got)
            assert len(tokens) == 1 and token not in tokens, tokens
            (successor,) = tokens

            # once the successor was resumed, the old token is refused; the successor itself
            # still repeats to its own successor
            newest = await _verify(cluster, successor)
            assert await _refused(cluster, token) == pb.TOKEN_INVALID
            assert await _verify(cluster, successor, directory=1) == newest

            # after the grace the repeat is refused; the newest token still resumes
            assert await asyncio.to_thread(_age_claims, cluster, uid, TOKEN_REUSE_GRACE_DEFAULT_S)
            assert await _refused(cluster, successor) == pb.TOKEN_INVALID
            assert await _verify(cluster, newest) != newest

            # logout with a token whose resume reply was lost revokes its successor too
            token = (await (await cluster.client()).login("alice", PASSWORD)).token
            lost = await _verify(cluster, token)
            await _call(cluster, "RevokeToken", cluster_pb2.DirTokenRequest(token=token))
            for dead in (token, lost):
                assert await _refused(cluster, dead) == pb.TOKEN_INVALID

            # a kick (as a disable or a new password) revokes claimed rows and successors
            token = (await (await cluster.client()).login("alice", PASSWORD)).token
            lost = await _verify(cluster, token)
            kick = cluster_pb2.DirEndSessionsRequest(user_id=uid, reason="bye")
            await _call(cluster, "EndSessions", kick)
            for dead in (token, lost):
                assert await _refused(cluster, dead) == pb.TOKEN_INVALID

            # the audit ends a session whose token was resumed elsewhere, and one whose token
            # was revoked without a SessionsEnd event
            rotated, revoked = await cluster.client(), await cluster.client()
            for client in (rotated, revoked):
                await client.login("alice", PASSWORD)
            started = time.monotonic()
            ends = [asyncio.ensure_future(_session_ended(c, 60)) for c in (rotated, revoked)]
            await _verify(cluster, rotated.token)
            await _call(cluster, "RevokeToken", cluster_pb2.DirTokenRequest(token=revoked.token))
            await asyncio.wait_for(asyncio.gather(*ends), 3 * timing.REVOCATION_AUDIT_INTERVAL_S)
            print(f"audit ended both sessions in {time.monotonic() - started:.1f} s")

    asyncio.run(main())
