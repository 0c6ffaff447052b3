"""Directory nodes as real processes over SQLite and MariaDB, called over RPC like a gateway:
accounts (validation codes, scrypt login, tokens, lockout), users, friends, groups, access
checks, and caches kept fresh across two directories (with Redis shared throttle and L2)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
import redis
from google.protobuf.message import Message

from fabric import keys
from fabric.config import Config
from fabric.methods import RpcError
from nodes.directory.tokens import TokenSigner, signing_key
from schema import client_pb2 as cpb
from schema import cluster_pb2 as dpb
from schema import common_pb2 as pb
from schema.contracts.directory import DIRECTORY
from tests.conftest import REDIS_URL
from tests.processes import NodeProcess, node_processes
from tests.support import async_wait_until
from tools.cluster_view import ClusterView

FAST_SCRYPT = "1024"
"""SOIM_SCRYPT_N for tests: the same code path as 2**17, 128x cheaper."""


@pytest.fixture(params=["sqlite", "mysql"])
def dir_env(
    request: pytest.FixtureRequest, cluster_name: str, keys_dir: Path, tmp_path: Path
) -> dict[str, str]:
    """The environment of a test cluster's directories, on SQLite or on a fresh MariaDB."""
    db = (
        f"sqlite:{tmp_path / 'data'}"
        if request.param == "sqlite"
        else request.getfixturevalue("mysql_db")
    )
    return {
        "SOIM_CLUSTER": cluster_name,
        "SOIM_KEYS_DIR": str(keys_dir),
        "SOIM_DB": db,
        "SOIM_SHARDS": "4",
        "SOIM_SCRYPT_N": FAST_SCRYPT,
        "SOIM_LOG_LEVEL": "INFO",
    }


class Dir:
    """Calls one directory node over RPC."""

    def __init__(self, view: ClusterView, node_id: str) -> None:
        self.view = view
        self.node_id = node_id

    async def __call__(self, name: str, req: Message) -> Any:
        return await self.view.peers.get(self.node_id).call(DIRECTORY[name], req, timeout=5)

    async def fails(self, name: str, req: Message) -> int:
        """The ErrorCode the call ends with (the test fails if it succeeds)."""
        with pytest.raises(RpcError) as err:
            await self(name, req)
        return err.value.code


async def started(view: ClusterView, *nodes: NodeProcess) -> list[Dir]:
    ids = {n.node_id for n in nodes}
    await async_wait_until(
        lambda: ids <= {p.node_id for p in view.membership.alive()},
        timeout=20,
        what="directories alive",
    )
    return [Dir(view, n.node_id) for n in nodes]


def run(env: dict[str, str], tmp_path: Path, n: int, body: Any) -> None:
    """Start `n` directories with `env`, then run `body(view, dirs)` against them."""

    async def main(procs: list[NodeProcess]) -> None:
        async with ClusterView(Config.from_env(env, role="test")) as view:
            procs += [NodeProcess("directory", env, tmp_path) for _ in range(n)]
            dirs = await started(view, *procs)
            await body(view, dirs)

    with node_processes(env, tmp_path) as procs:
        asyncio.run(main(procs))


async def register(d: Dir, account: str, nickname: str = "") -> dpb.DirAuthReply:
    return await d(
        "Register",
        dpb.DirRegisterRequest(account=account, password="secret-pw-1", nickname=nickname),
    )


@pytest.mark.timeout(60)
def test_accounts_tokens_and_lockout(dir_env: dict[str, str], tmp_path: Path) -> None:
    async def body(view: ClusterView, dirs: list[Dir]) -> None:
        d = dirs[0]
        alice = await register(d, "alice", "Alice A.")
        assert alice.user.account == "alice" and alice.user.nickname == "Alice A."
        assert alice.user.user_id > 0 and alice.token
        assert alice.token_expires_ms > time.time() * 1000 + 3600_000
        bob = await register(d, "bob")
        assert bob.user.nickname == "bob"  # empty nickname means the account

        # validation, each with its own code
        bad = [
            ("ab", "secret-pw-1", "", pb.INVALID_ACCOUNT),
            ("Alice", "secret-pw-1", "", pb.INVALID_ACCOUNT),
            ("a" * 33, "secret-pw-1", "", pb.INVALID_ACCOUNT),
            ("carol", "short", "", pb.INVALID_PASSWORD),
            ("carol", "x" * 129, "", pb.INVALID_PASSWORD),
            ("carol", "secret-pw-1", "n" * 33, pb.INVALID_NAME),
            ("carol", "secret-pw-1", "bell\x07", pb.INVALID_NAME),
            ("carol", "secret-pw-1", " padded", pb.INVALID_NAME),
            ("alice", "secret-pw-1", "", pb.ALREADY_EXISTS),
        ]
        for account, password, nickname, code in bad:
            req = dpb.DirRegisterRequest(account=account, password=password, nickname=nickname)
            assert await d.fails("Register", req) == code, (account, password, nickname)
        assert (await register(d, "carol", "Ça va 😀")).user.nickname == "Ça va 😀"

        # login: right, wrong, unknown
        ok = await d("Login", dpb.DirLoginRequest(account="alice", password="secret-pw-1"))
        assert ok.user.user_id == alice.user.user_id and ok.token != alice.token
        assert (
            await d.fails("Login", dpb.DirLoginRequest(account="nobody", password="secret-pw-1"))
            == pb.BAD_CREDENTIALS
        )

        # tokens: genuine ones verify and are renewed; forged, expired and garbage are not
        again = await d("VerifyToken", dpb.DirTokenRequest(token=alice.token))
        assert again.user.user_id == alice.user.user_id and again.token
        raw = bytearray(alice.token.encode())
        raw[20] = ord("A") if raw[20] != ord("A") else ord("B")
        signer = TokenSigner(
            signing_key(keys.load_secret(Path(dir_env["SOIM_KEYS_DIR"]), keys.TOKEN_SECRET)), 3600
        )
        expired, _ = signer.issue(alice.user.user_id, expires_ms=int(time.time() * 1000) - 1)
        other_cluster, _ = TokenSigner(signing_key(b"x" * 40), 3600).issue(alice.user.user_id)
        for token in (raw.decode(), expired, other_cluster, "", "not a token"):
            assert (
                await d.fails("VerifyToken", dpb.DirTokenRequest(token=token)) == pb.TOKEN_INVALID
            ), token

        # five wrong passwords lock the account, even against the right one; others are fine
        for _ in range(5):
            assert (
                await d.fails("Login", dpb.DirLoginRequest(account="bob", password="wrong-pw-1"))
                == pb.BAD_CREDENTIALS
            )
        assert (
            await d.fails("Login", dpb.DirLoginRequest(account="bob", password="secret-pw-1"))
            == pb.LOCKED_OUT
        )
        await d("Login", dpb.DirLoginRequest(account="alice", password="secret-pw-1"))

        # a disabled account can neither log in nor resume (until enabled again)
        disable = dpb.DirDisableRequest
        assert (await d("SetDisabled", disable(user_id=alice.user.user_id, disabled=True))).disabled
        assert (
            await d.fails("Login", dpb.DirLoginRequest(account="alice", password="secret-pw-1"))
            == pb.ACCOUNT_DISABLED
        )
        assert (
            await d.fails("VerifyToken", dpb.DirTokenRequest(token=again.token)) == pb.TOKEN_INVALID
        )  # disabling revoked every token
        assert await d.fails("SetDisabled", disable(user_id=424_242, disabled=True)) == pb.NOT_FOUND
        await d("SetDisabled", disable(user_id=bob.user.user_id, disabled=False))

        # users in request order, unknown ids left out; touch; search by account prefix
        ids = [bob.user.user_id, 999_999, alice.user.user_id]
        await d(
            "Touch",
            dpb.TouchRequest(
                seen=[
                    dpb.UserSeen(user_id=bob.user.user_id, ts_ms=5000),
                    dpb.UserSeen(user_id=bob.user.user_id, ts_ms=4000),
                ]
            ),
        )
        users = (await d("Users", dpb.UserIds(user_ids=ids))).users
        assert [u.account for u in users] == ["bob", "alice"]
        assert users[0].last_active_ms == 5000 and not users[0].disabled and users[1].disabled
        # a later Touch moves a time forward, never back
        seen = dpb.UserSeen
        await d(
            "Touch",
            dpb.TouchRequest(
                seen=[
                    seen(user_id=bob.user.user_id, ts_ms=4500),
                    seen(user_id=alice.user.user_id, ts_ms=7000),
                ]
            ),
        )
        await d("Touch", dpb.TouchRequest(seen=[seen(user_id=alice.user.user_id, ts_ms=8000)]))
        users = (await d("Users", dpb.UserIds(user_ids=ids))).users
        assert [u.last_active_ms for u in users] == [5000, 8000]
        for i in range(25):
            await register(d, f"zed{i:02d}")
        found = (await d("SearchUsers", cpb.SearchUsersRequest(prefix="zed"))).users
        assert [u.account for u in found] == [f"zed{i:02d}" for i in range(20)]
        found = (await d("SearchUsers", cpb.SearchUsersRequest(prefix="c"))).users
        assert [(u.account, u.nickname) for u in found] == [("carol", "Ça va 😀")]
        for prefix in ("", "Z", "x" * 33):
            assert (
                await d.fails("SearchUsers", cpb.SearchUsersRequest(prefix=prefix))
                == pb.INVALID_ARGUMENT
            )

    run(dir_env, tmp_path, 1, body)


@pytest.mark.timeout(60)
def test_verify_tokens_answers_each_token(dir_env: dict[str, str], tmp_path: Path) -> None:
    """VerifyTokens: one result per token, in order, each as VerifyToken would answer it."""

    async def body(view: ClusterView, dirs: list[Dir]) -> None:
        d = dirs[0]
        alice, bob = await register(d, "alice"), await register(d, "bob")
        await d("SetDisabled", dpb.DirDisableRequest(user_id=bob.user.user_id, disabled=True))
        signer = TokenSigner(
            signing_key(keys.load_secret(Path(dir_env["SOIM_KEYS_DIR"]), keys.TOKEN_SECRET)), 3600
        )
        expired, _ = signer.issue(alice.user.user_id, expires_ms=int(time.time() * 1000) - 1)
        nobody, _ = signer.issue(424_242)
        asks = [
            (alice.token, pb.OK),
            (bob.token, pb.TOKEN_INVALID),  # disabling revoked it
            (expired, pb.TOKEN_INVALID),
            ("not a token", pb.TOKEN_INVALID),
            (nobody, pb.TOKEN_INVALID),
            (alice.token, pb.OK),
        ]  # rotated by [0]: a repeat gets the same successor (the reuse grace)
        reply = await d(
            "VerifyTokens",
            dpb.DirTokensRequest(tokens=[dpb.DirTokenRequest(token=t) for t, _ in asks]),
        )
        assert [r.code for r in reply.results] == [code for _, code in asks]
        assert reply.results[2].detail == "expired"
        result = reply.results[0]
        assert result.auth.user.account == "alice" and result.auth.token != alice.token
        assert (
            await d("VerifyToken", dpb.DirTokenRequest(token=result.auth.token))
        ).user.user_id == alice.user.user_id
        assert reply.results[5].auth.token == result.auth.token
        with pytest.raises(RpcError) as err:  # its successor was used: spent
            await d("VerifyToken", dpb.DirTokenRequest(token=alice.token))
        assert err.value.detail == "revoked or already used"
        assert not reply.results[1].HasField("auth")

        # enabled again, the revoked token stays revoked; a new login's token resumes; empty
        # and oversized calls
        await d("SetDisabled", dpb.DirDisableRequest(user_id=bob.user.user_id, disabled=False))
        fresh = await d("Login", dpb.DirLoginRequest(account="bob", password="secret-pw-1"))
        again = await d(
            "VerifyTokens",
            dpb.DirTokensRequest(
                tokens=[dpb.DirTokenRequest(token=t) for t in (bob.token, fresh.token)]
            ),
        )
        assert [r.code for r in again.results] == [pb.TOKEN_INVALID, pb.OK]
        assert not (await d("VerifyTokens", dpb.DirTokensRequest())).results
        assert (
            await d.fails(
                "VerifyTokens",
                dpb.DirTokensRequest(tokens=[dpb.DirTokenRequest(token=alice.token)] * 501),
            )
            == pb.INVALID_ARGUMENT
        )

    run(dir_env, tmp_path, 1, body)


@pytest.mark.timeout(60)
def test_friends_groups_and_access(dir_env: dict[str, str], tmp_path: Path) -> None:
    async def body(view: ClusterView, dirs: list[Dir]) -> None:
        d = dirs[0]
        a, b, c = [(await register(d, name)).user.user_id for name in ("ann", "ben", "cat")]

        # friends: request, repeat, accept from the other side; errors
        add = dpb.DirAddFriendRequest
        first = await d("AddFriend", add(user_id=a, friend_id=b))
        assert (first.result, first.conv_id) == (cpb.ADD_FRIEND_REQUESTED, 0)
        assert (
            await d("AddFriend", add(user_id=a, friend_id=b))
        ).result == cpb.ADD_FRIEND_REQUESTED
        await d("AddFriend", add(user_id=c, friend_id=a))
        listed = (await d("Friends", dpb.UserRef(user_id=a))).friends
        assert [(f.account, f.state) for f in listed] == [
            ("ben", cpb.FRIEND_STATE_OUTGOING),
            ("cat", cpb.FRIEND_STATE_INCOMING),
        ]
        accepted = await d("AddFriend", add(user_id=b, friend_id=a))
        assert accepted.result == cpb.ADD_FRIEND_ACCEPTED and accepted.conv_id > 0
        assert await d.fails("AddFriend", add(user_id=a, friend_id=b)) == pb.ALREADY_FRIENDS
        assert await d.fails("AddFriend", add(user_id=a, friend_id=a)) == pb.SELF_FRIEND
        assert await d.fails("AddFriend", add(user_id=a, friend_id=777_777)) == pb.NOT_FOUND
        for me, other in ((a, b), (b, a)):
            mine = {f.user_id: f for f in (await d("Friends", dpb.UserRef(user_id=me))).friends}
            assert mine[other].state == cpb.FRIEND_STATE_ACCEPTED
            assert mine[other].conv_id == accepted.conv_id

        # groups: create, unique name, search, join, full, leave, members
        create = dpb.DirGroupCreateRequest
        g = (await d("GroupCreate", create(user_id=a, name="book club", user_limit=2))).group
        assert (g.name, g.members, g.user_limit, g.owner, g.owner_account) == (
            "book club",
            1,
            2,
            a,
            "ann",
        )
        g2 = (await d("GroupCreate", create(user_id=b, name="board games"))).group
        assert g2.user_limit == 500 and g2.group_id not in (g.group_id, accepted.conv_id)
        assert (
            await d.fails("GroupCreate", create(user_id=c, name="book club")) == pb.ALREADY_EXISTS
        )
        assert await d.fails("GroupCreate", create(user_id=c, name="")) == pb.INVALID_NAME
        assert await d.fails("GroupCreate", create(user_id=c, name="g" * 33)) == pb.INVALID_NAME
        assert (
            await d.fails("GroupCreate", create(user_id=c, name="tiny", user_limit=1))
            == pb.INVALID_ARGUMENT
        )
        found = (await d("GroupSearch", cpb.GroupSearchRequest(prefix="bo"))).groups
        assert [x.name for x in found] == ["board games", "book club"]
        assert (
            await d.fails("GroupSearch", cpb.GroupSearchRequest(prefix="")) == pb.INVALID_ARGUMENT
        )
        listed = dpb.ListGroupsRequest
        page = (await d("ListGroups", listed(limit=1))).groups
        assert [x.group_id for x in page] == [g.group_id]
        page = (await d("ListGroups", listed(cursor=g.group_id))).groups
        assert [x.name for x in page] == ["board games"]
        assert await d.fails("ListGroups", listed(limit=1001)) == pb.INVALID_ARGUMENT

        # the access check caches "not a member" before cat joins
        check = dpb.AccessCheck
        before = await d(
            "CheckAccess", dpb.AccessRequest(checks=[check(user_id=c, to_group=g.group_id)])
        )
        assert before.results[0].error == pb.NOT_MEMBER
        grp = dpb.DirGroupRequest
        assert await d.fails("GroupUsers", grp(user_id=c, group_id=g.group_id)) == pb.NOT_MEMBER
        joined = (await d("GroupJoin", grp(user_id=c, group_id=g.group_id))).group
        assert joined.members == 2
        assert await d.fails("GroupJoin", grp(user_id=c, group_id=g.group_id)) == pb.ALREADY_MEMBER
        assert await d.fails("GroupJoin", grp(user_id=b, group_id=g.group_id)) == pb.GROUP_FULL
        assert await d.fails("GroupJoin", grp(user_id=b, group_id=123_456)) == pb.NOT_FOUND
        members = (await d("GroupUsers", grp(user_id=c, group_id=g.group_id))).members
        assert [m.account for m in members] == ["ann", "cat"]
        mine = (await d("Groups", dpb.UserRef(user_id=c))).groups
        assert [(x.group_id, x.members) for x in mine] == [(g.group_id, 2)]

        # batched access checks, in order
        result = await d(
            "CheckAccess",
            dpb.AccessRequest(
                checks=[
                    check(user_id=a, to_user=b),
                    check(user_id=b, to_user=c),
                    check(user_id=c, to_group=g.group_id),
                    check(user_id=b, to_group=g.group_id),
                    check(user_id=b, conv_id=accepted.conv_id),
                    check(user_id=c, conv_id=accepted.conv_id),
                    check(user_id=c, conv_id=g.group_id),
                    check(user_id=a, to_group=987_654),
                ]
            ),
        )
        got = [(r.error, r.conv_id, r.kind, r.peer_id) for r in result.results]
        direct, group = cpb.CONV_KIND_DIRECT, cpb.CONV_KIND_GROUP
        assert got == [
            (pb.OK, accepted.conv_id, direct, b),
            (pb.NOT_FRIEND, 0, 0, 0),
            (pb.OK, g.group_id, group, g.group_id),
            (pb.NOT_MEMBER, 0, 0, 0),
            (pb.OK, accepted.conv_id, direct, a),
            (pb.NOT_FOUND, 0, 0, 0),
            (pb.OK, g.group_id, group, g.group_id),
            (pb.NOT_FOUND, 0, 0, 0),
        ]
        convs = (await d("Conversations", dpb.UserRef(user_id=a))).conversations
        assert [(x.conv_id, x.kind, x.peer_id, x.title) for x in convs] == [
            (accepted.conv_id, direct, b, "ben"),
            (g.group_id, group, g.group_id, "book club"),
        ]
        many = await d("GroupMembers", dpb.GroupIds(group_ids=[g2.group_id, 55, g.group_id]))
        assert [(x.group_id, list(x.user_ids)) for x in many.groups] == [
            (g2.group_id, [b]),
            (g.group_id, sorted([a, c])),
        ]

        # leave: the member list and the access answer follow
        await d("GroupLeave", grp(user_id=c, group_id=g.group_id))
        assert await d.fails("GroupLeave", grp(user_id=c, group_id=g.group_id)) == pb.NOT_MEMBER
        assert await d.fails("GroupUsers", grp(user_id=c, group_id=g.group_id)) == pb.NOT_MEMBER
        after = await d(
            "CheckAccess", dpb.AccessRequest(checks=[check(user_id=c, to_group=g.group_id)])
        )
        assert after.results[0].error == pb.NOT_MEMBER
        assert (await d("Groups", dpb.UserRef(user_id=c))).groups == []

        # races: one name wins, a group never passes its limit, a mutual add is one friendship
        async def outcome(call: Awaitable[Any]) -> Any:
            try:
                return await call
            except RpcError as err:
                return err.code

        names = await asyncio.gather(*(outcome(register(d, "racer")) for _ in range(6)))
        assert [x for x in names if isinstance(x, int)] == [pb.ALREADY_EXISTS] * 5
        crowd = [(await register(d, f"fan{i}")).user.user_id for i in range(6)]
        small = (await d("GroupCreate", create(user_id=a, name="small", user_limit=3))).group
        joins = await asyncio.gather(
            *(outcome(d("GroupJoin", grp(user_id=u, group_id=small.group_id))) for u in crowd)
        )
        assert sorted(x for x in joins if isinstance(x, int)) == [pb.GROUP_FULL] * 4
        members = (await d("GroupMembers", dpb.GroupIds(group_ids=[small.group_id]))).groups
        assert len(members[0].user_ids) == 3
        x, y = crowd[0], crowd[1]
        adds = await asyncio.gather(
            *(
                outcome(d("AddFriend", add(user_id=me, friend_id=other)))
                for me, other in ((x, y), (y, x)) * 3
            )
        )
        assert [r.result for r in adds if not isinstance(r, int)].count(
            cpb.ADD_FRIEND_ACCEPTED
        ) == 1
        assert all(r == pb.ALREADY_FRIENDS for r in adds if isinstance(r, int))
        convs = {
            f.conv_id
            for me in (x, y)
            for f in (await d("Friends", dpb.UserRef(user_id=me))).friends
            if f.state == cpb.FRIEND_STATE_ACCEPTED
        }
        assert len(convs) == 1 and convs != {0}

    run(dir_env, tmp_path, 1, body)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "no-redis"])
def test_two_directories_share_lockout_and_caches(
    cluster_name: str,
    keys_dir: Path,
    tmp_path: Path,
    mysql_db: str,
    request: pytest.FixtureRequest,
    with_redis: bool,
) -> None:
    env = {
        "SOIM_CLUSTER": cluster_name,
        "SOIM_KEYS_DIR": str(keys_dir),
        "SOIM_DB": mysql_db,
        "SOIM_SCRYPT_N": FAST_SCRYPT,
        "SOIM_REGISTER_PER_MIN": "3",
        "SOIM_LOG_LEVEL": "INFO",
    }
    if with_redis:
        env |= {
            "SOIM_REDIS_URL": REDIS_URL,
            "SOIM_REDIS_PREFIX": request.getfixturevalue("redis_prefix"),
        }

    async def body(view: ClusterView, dirs: list[Dir]) -> None:
        one, two = dirs
        dave = (await register(one, "dave")).user.user_id
        eve = (await register(two, "eve")).user.user_id

        # registrations per client address are limited (SOIM_REGISTER_PER_MIN=3)
        for i in range(3):
            await one(
                "Register",
                dpb.DirRegisterRequest(
                    account=f"bot{i}", password="secret-pw-1", client_addr="192.0.2.7"
                ),
            )
        assert (
            await one.fails(
                "Register",
                dpb.DirRegisterRequest(
                    account="bot3", password="secret-pw-1", client_addr="192.0.2.7"
                ),
            )
            == pb.RATE_LIMITED
        )
        await one(
            "Register",
            dpb.DirRegisterRequest(account="bot3", password="secret-pw-1", client_addr="192.0.2.8"),
        )

        # failures alternate between the two directories
        for i in range(5):
            d = (one, two)[i % 2]
            assert (
                await d.fails("Login", dpb.DirLoginRequest(account="dave", password="wrong-pw-1"))
                == pb.BAD_CREDENTIALS
            )
        right = dpb.DirLoginRequest(account="dave", password="secret-pw-1")
        if with_redis:
            for d in (one, two):
                assert await d.fails("Login", right) == pb.LOCKED_OUT
        else:  # per process: three failures at one, two at the other
            assert (await one("Login", right)).user.user_id == dave

        # a token from one directory resumes at the other
        eve_token = (
            await two("Login", dpb.DirLoginRequest(account="eve", password="secret-pw-1"))
        ).token
        assert (await one("VerifyToken", dpb.DirTokenRequest(token=eve_token))).user.user_id == eve

        # caches at `one` follow writes made at `two` (CacheInvalidation events)
        g = (
            await one("GroupCreate", dpb.DirGroupCreateRequest(user_id=dave, name="night owls"))
        ).group
        checks = dpb.AccessRequest(
            checks=[
                dpb.AccessCheck(user_id=eve, to_group=g.group_id),
                dpb.AccessCheck(user_id=eve, to_user=dave),
            ]
        )
        assert [r.error for r in (await one("CheckAccess", checks)).results] == [
            pb.NOT_MEMBER,
            pb.NOT_FRIEND,
        ]
        if with_redis:  # the shared L2 holds the member list now
            client = redis.Redis.from_url(REDIS_URL)
            assert (
                client.get(f"{env['SOIM_REDIS_PREFIX']}dir:gm:{g.group_id}") == str(dave).encode()
            )
            client.close()
        await two("GroupJoin", dpb.DirGroupRequest(user_id=eve, group_id=g.group_id))
        await two("AddFriend", dpb.DirAddFriendRequest(user_id=eve, friend_id=dave))
        await two("AddFriend", dpb.DirAddFriendRequest(user_id=dave, friend_id=eve))

        async def both_ok() -> bool:
            results = (await one("CheckAccess", checks)).results
            return [r.error for r in results] == [pb.OK, pb.OK]

        await async_wait_until(both_ok, timeout=3, what="invalidation reached the other node")

    run(env, tmp_path, 2, body)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SOIM_SCRYPT_N", "3000"),
        ("SOIM_TOKEN_TTL_S", "soon"),
        ("SOIM_DB", "mysql://root@127.0.0.1:1/nowhere"),
        ("SOIM_REDIS_URL", "redis://127.0.0.1:1/0"),
    ],
)
def test_bad_setting_is_one_line_naming_it(
    var: str, value: str, cluster_name: str, keys_dir: Path, tmp_path: Path
) -> None:
    env = {
        "SOIM_CLUSTER": cluster_name,
        "SOIM_KEYS_DIR": str(keys_dir),
        "SOIM_DB": f"sqlite:{tmp_path / 'data'}",
        var: value,
    }
    node = NodeProcess("directory", env, tmp_path)
    assert node.wait(20) == 2
    lines = [line for line in node.log().splitlines() if var in line]
    assert lines and "Traceback" not in node.log(), node.log()
