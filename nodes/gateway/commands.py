"""Client commands about people and groups: users, friends, add, search, group … .

Role: each handler takes the user from the session (never from the request), asks the
directory, fills in online state from the routers (never of a user who has blocked the asker;
OnlineUsers lists friends and members of shared groups unless asked for everyone), and pushes
notices to the other side where a command concerns them (a friend request — once a day at most
—, an accepted request, a group invitation).
Peer sockets: none of its own; directories and routers are reached through `Upstream`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.gateway.sessions import Session, SessionTable
from nodes.gateway.upstream import Upstream
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb

ONLINE_PAGE_DEFAULT = 50
ONLINE_PAGE_MAX = 200


class Commands:
    """People and group handlers of one gateway."""

    def __init__(self, sessions: SessionTable, upstream: Upstream) -> None:
        self.sessions = sessions
        self.upstream = upstream
        self._background: set[asyncio.Task[Any]] = set()

    def _me(self, call: Call) -> Session:
        session = self.sessions.get(call.identity)
        if session is None:  # the gate admits only sessions here; a logout may race
            raise RpcError(pb.UNAUTHENTICATED, "log in first")
        return session

    async def online_users(
        self, req: client_pb2.OnlineUsersRequest, call: Call
    ) -> client_pb2.OnlineUsersReply:
        me = self._me(call)
        limit = req.limit or ONLINE_PAGE_DEFAULT
        if limit > ONLINE_PAGE_MAX:
            raise RpcError(pb.INVALID_ARGUMENT, f"limit: at most {ONLINE_PAGE_MAX}")
        contacts = await self.upstream.directory(
            "Contacts", cluster_pb2.ContactsRequest(user_id=me.user_id, blockers_only=req.everyone)
        )
        if req.everyone:
            ids, more = await self.upstream.online_users(req.cursor, limit)
        else:
            ids, more = await self._online_among(contacts.contacts, req.cursor, limit)
        hidden = set(contacts.blockers)
        shown = [u for u in ids if u not in hidden]
        users = (
            await self.upstream.directory("Users", cluster_pb2.UserIds(user_ids=shown))
            if shown
            else cluster_pb2.DirUsersReply()
        )
        return client_pb2.OnlineUsersReply(
            users=[
                client_pb2.OnlineUser(user_id=u.user_id, account=u.account) for u in users.users
            ],
            next_cursor=ids[-1] if more and ids else 0,
        )

    async def _online_among(
        self, contacts: Sequence[int], cursor: int, limit: int
    ) -> tuple[list[int], bool]:
        """The first `limit` online users of `contacts` (ascending) above `cursor`, and whether
        more are online; asks the routers about ONLINE_PAGE_MAX contacts at a time."""
        rest = [u for u in contacts if u > cursor]
        found: list[int] = []
        for start in range(0, len(rest), ONLINE_PAGE_MAX):
            chunk = rest[start : start + ONLINE_PAGE_MAX]
            online = await self.upstream.online(chunk)
            found += [u for u in chunk if u in online]
            if len(found) > limit:
                break
        return found[:limit], len(found) > limit

    async def blockers(self, user_id: int) -> set[int]:
        """The users who have blocked `user_id`: they read as offline to it."""
        reply = await self.upstream.directory(
            "Contacts", cluster_pb2.ContactsRequest(user_id=user_id, blockers_only=True)
        )
        return set(reply.blockers)

    async def friends(self, req: client_pb2.FriendsRequest, call: Call) -> client_pb2.FriendsReply:
        me = self._me(call)
        reply, hidden = await asyncio.gather(
            self.upstream.directory("Friends", cluster_pb2.UserRef(user_id=me.user_id)),
            self.blockers(me.user_id),
        )
        online = await self.upstream.online(f.user_id for f in reply.friends)
        for friend in reply.friends:
            friend.online = friend.user_id in online and friend.user_id not in hidden
        return reply

    async def add_friend(
        self, req: client_pb2.AddFriendRequest, call: Call
    ) -> client_pb2.AddFriendReply:
        me = self._me(call)
        reply = await self.upstream.directory(
            "AddFriend", cluster_pb2.DirAddFriendRequest(user_id=me.user_id, friend_id=req.user_id)
        )
        accepted = reply.result == client_pb2.ADD_FRIEND_ACCEPTED
        if not (accepted or reply.notified):
            return reply  # a repeated request: its notice went out less than a day ago
        kind = client_pb2.NOTICE_FRIEND_ACCEPTED if accepted else client_pb2.NOTICE_FRIEND_REQUEST
        notice = client_pb2.Push(
            notice=client_pb2.Notice(
                kind=kind,
                conv_id=reply.conv_id,
                user=client_pb2.UserSummary(
                    user_id=me.user_id, account=me.account, nickname=me.nickname
                ),
            )
        )
        self._later(self.upstream.deliver([req.user_id], notice.SerializeToString()))
        return reply

    async def search_users(
        self, req: client_pb2.SearchUsersRequest, call: Call
    ) -> client_pb2.SearchUsersReply:
        self._me(call)
        return await self.upstream.directory("SearchUsers", req)

    async def groups(self, req: client_pb2.GroupsRequest, call: Call) -> client_pb2.GroupsReply:
        me = self._me(call)
        return await self.upstream.directory("Groups", cluster_pb2.UserRef(user_id=me.user_id))

    async def group_create(
        self, req: client_pb2.GroupCreateRequest, call: Call
    ) -> client_pb2.GroupCreateReply:
        me = self._me(call)
        return await self.upstream.directory(
            "GroupCreate",
            cluster_pb2.DirGroupCreateRequest(
                user_id=me.user_id,
                name=req.name,
                user_limit=req.user_limit,
                visibility=req.visibility,
                history=req.history,
            ),
        )

    async def group_search(
        self, req: client_pb2.GroupSearchRequest, call: Call
    ) -> client_pb2.GroupSearchReply:
        me = self._me(call)
        return await self.upstream.directory(
            "GroupSearch", cluster_pb2.DirGroupSearchRequest(prefix=req.prefix, user_id=me.user_id)
        )

    async def group_join(
        self, req: client_pb2.GroupJoinRequest, call: Call
    ) -> client_pb2.GroupJoinReply:
        me = self._me(call)
        return await self.upstream.directory(
            "GroupJoin", cluster_pb2.DirGroupRequest(user_id=me.user_id, group_id=req.group_id)
        )

    async def group_leave(
        self, req: client_pb2.GroupLeaveRequest, call: Call
    ) -> client_pb2.GroupLeaveReply:
        me = self._me(call)
        await self.upstream.directory(
            "GroupLeave", cluster_pb2.DirGroupRequest(user_id=me.user_id, group_id=req.group_id)
        )
        return client_pb2.GroupLeaveReply()

    async def group_users(
        self, req: client_pb2.GroupUsersRequest, call: Call
    ) -> client_pb2.GroupUsersReply:
        me = self._me(call)
        reply, hidden = await asyncio.gather(
            self.upstream.directory(
                "GroupUsers", cluster_pb2.DirGroupRequest(user_id=me.user_id, group_id=req.group_id)
            ),
            self.blockers(me.user_id),
        )
        online = await self.upstream.online(m.user_id for m in reply.members)
        for member in reply.members:
            member.online = member.user_id in online and member.user_id not in hidden
            if member.user_id in hidden:
                member.last_active_ms = 0
        return reply

    async def group_settings(
        self, req: client_pb2.GroupSettingsRequest, call: Call
    ) -> client_pb2.GroupSettingsReply:
        me = self._me(call)
        return await self.upstream.directory(
            "GroupSettings",
            cluster_pb2.DirGroupSettingsRequest(
                user_id=me.user_id,
                group_id=req.group_id,
                visibility=req.visibility,
                history=req.history,
            ),
        )

    async def group_invite(
        self, req: client_pb2.GroupInviteRequest, call: Call
    ) -> client_pb2.GroupInviteReply:
        """Invite, then tell the invitee (best effort): a Notice naming the group."""
        me = self._me(call)
        reply = await self.upstream.directory(
            "GroupInvite",
            cluster_pb2.DirGroupInviteRequest(
                user_id=me.user_id, group_id=req.group_id, invitee_id=req.user_id
            ),
        )
        notice = client_pb2.Push(
            notice=client_pb2.Notice(
                kind=client_pb2.NOTICE_GROUP_INVITE,
                conv_id=req.group_id,
                text=f"{me.account} invited you to group {req.group_id}: group join "
                f"{req.group_id} joins it",
                user=client_pb2.UserSummary(
                    user_id=me.user_id, account=me.account, nickname=me.nickname
                ),
            )
        )
        self._later(self.upstream.deliver([req.user_id], notice.SerializeToString()))
        return reply

    def _later(self, job: Any) -> None:
        """Run a best-effort push without holding up the reply."""
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
