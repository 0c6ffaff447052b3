"""Directory rpcs of friendships: AddFriend (request, or accept when they asked first) and
Friends (both directions, with state).

Role: check the two users, write the friendship (database threads), announce the change so
every directory and gateway drops its cached friendship facts. The gateway pushes the Notice
to the other user when the reply says `notified` (a new request, or a repeated one whose last
notice is a day old: friend_rows.NOTICE_EVERY_MS). Peer sockets: none of its own (served on
the node's RPC ROUTER; the CacheInvalidation goes out on the node's events PUB).
"""

from __future__ import annotations

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.directory import account_rows, block_rows, caches, friend_rows, user_rows, validation
from nodes.directory.context import Context
from nodes.directory.tokens import now_ms
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb


class Friends:
    """The friendship handlers over one `Context`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def add_friend(
        self, req: cluster_pb2.DirAddFriendRequest, call: Call
    ) -> client_pb2.AddFriendReply:
        """Request, or accept. Errors: SELF_FRIEND, NOT_FOUND, BLOCKED, ALREADY_FRIENDS."""
        me = validation.user_id(req.user_id)
        other = validation.user_id(req.friend_id, "friend_id")
        if me == other:
            raise RpcError(pb.SELF_FRIEND, "you cannot befriend yourself")
        outcome, conv_id = await self.ctx.db(self._add, me, other)
        await self.ctx.announce(caches.friendship_changed(me, other, conv_id))
        if outcome is friend_rows.Outcome.ACCEPTED:
            return client_pb2.AddFriendReply(result=client_pb2.ADD_FRIEND_ACCEPTED, conv_id=conv_id)
        return client_pb2.AddFriendReply(
            result=client_pb2.ADD_FRIEND_REQUESTED,
            notified=outcome is friend_rows.Outcome.REQUESTED,
        )

    def _add(self, me: int, other: int) -> tuple[friend_rows.Outcome, int]:
        ctx = self.ctx
        found = account_rows.users(ctx.store, [other]).get(other)
        if found is None or user_rows.is_deleted(found):
            raise RpcError(pb.NOT_FOUND, f"no user {other}")
        if block_rows.blocked(ctx.store, [(other, me)]):
            raise RpcError(pb.BLOCKED, f"{found.account} has blocked you")
        return friend_rows.add(ctx.store, ctx.ids, me, other, now_ms())

    async def friends(self, req: cluster_pb2.UserRef, call: Call) -> client_pb2.FriendsReply:
        """Friends, pending requests and blocked users of the user, by account; `online` left
        false."""
        return await self.ctx.db(self._friends, req.user_id)

    def _friends(self, user_id: int) -> client_pb2.FriendsReply:
        store = self.ctx.store
        rows = friend_rows.of_user(store, user_id)
        blocked = block_rows.of_user(store, user_id, mine=True)
        people = account_rows.users(store, [r.friend_id for r in rows] + blocked)
        out = []
        for r in rows:
            person = people.get(r.friend_id)
            if person is None:
                continue
            state = (
                client_pb2.FRIEND_STATE_ACCEPTED
                if r.accepted
                else client_pb2.FRIEND_STATE_OUTGOING
                if r.requested_by == user_id
                else client_pb2.FRIEND_STATE_INCOMING
            )
            out.append(
                client_pb2.Friend(
                    user_id=r.friend_id,
                    account=person.account,
                    nickname=person.nickname,
                    conv_id=r.conv_id,
                    state=state,
                )
            )
        out.sort(key=lambda f: f.account)
        listed = sorted((people[u] for u in blocked if u in people), key=lambda u: u.account)
        return client_pb2.FriendsReply(
            friends=out,
            blocked=[
                client_pb2.UserSummary(user_id=u.user_id, account=u.account, nickname=u.nickname)
                for u in listed
            ],
        )
