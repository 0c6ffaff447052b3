"""Directory rpcs of groups: Groups, GroupCreate, GroupSearch, GroupJoin, GroupLeave,
GroupUsers, GroupMembers, GroupSettings, GroupInvite, and ListGroups for operators.

Role: validate, read and write groups (database threads), announce membership changes so every
directory and gateway drops its cached member lists, and refuse member lists to non-members.
The owner's rules: visibility (public, or invite-only: joined only by invitation, found by
search only by members) and history (from join, or all); defaults public
and from join (`validation.group_rules`). Member lists come through the shared cache
(`access.Access.members`).
Peer sockets: none of its own (served on the node's RPC ROUTER; CacheInvalidations go out on
the node's events PUB).
"""

from __future__ import annotations

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.directory import account_rows, caches, group_rows, user_rows, validation
from nodes.directory.access import Access
from nodes.directory.accounts import Accounts
from nodes.directory.context import Context
from nodes.directory.group_rows import GroupRow
from nodes.directory.tokens import now_ms
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb

LIST_PAGE_DEFAULT = 100
LIST_PAGE_MAX = 1000


class Groups:
    """The group handlers over one `Context`; member lists through `access`, member records
    through `accounts`."""

    def __init__(self, ctx: Context, access: Access, accounts: Accounts) -> None:
        self.ctx = ctx
        self.access = access
        self.accounts = accounts

    async def groups(self, req: cluster_pb2.UserRef, call: Call) -> client_pb2.GroupsReply:
        """The groups the user is a member of, by name."""
        return await self.ctx.db(self._groups, req.user_id)

    def _groups(self, user_id: int) -> client_pb2.GroupsReply:
        store = self.ctx.store
        found = group_rows.groups(store, group_rows.of_user(store, user_id))
        rows = sorted(found.values(), key=lambda g: g.name)
        return client_pb2.GroupsReply(groups=self.infos(rows))

    async def group_create(
        self, req: cluster_pb2.DirGroupCreateRequest, call: Call
    ) -> client_pb2.GroupCreateReply:
        """A new group owned by the user. INVALID_NAME, INVALID_ARGUMENT, ALREADY_EXISTS."""
        owner = validation.user_id(req.user_id)
        name = validation.name(req.name, "group name")
        limit = validation.group_limit(req.user_limit)
        visibility, history = validation.group_rules(req.visibility, req.history)
        info = await self.ctx.db(self._create, owner, name, limit, visibility, history)
        await self.ctx.announce(caches.membership_changed(info.group_id, owner, True))
        return client_pb2.GroupCreateReply(group=info)

    def _create(
        self, owner: int, name: str, limit: int, visibility: int, history: int
    ) -> client_pb2.GroupInfo:
        row = group_rows.create(
            self.ctx.store, self.ctx.ids, owner, name, limit, visibility, history, now_ms()
        )
        return self.infos([row])[0]

    async def group_search(
        self, req: cluster_pb2.DirGroupSearchRequest, call: Call
    ) -> client_pb2.GroupSearchReply:
        """At most 20 groups whose name starts with the prefix that the user may see, by name."""
        prefix = validation.name_prefix(req.prefix)
        return await self.ctx.db(self._search, prefix, req.user_id)

    def _search(self, prefix: str, user_id: int) -> client_pb2.GroupSearchReply:
        return client_pb2.GroupSearchReply(
            groups=self.infos(group_rows.search(self.ctx.store, prefix, user_id))
        )

    async def list_groups(
        self, req: cluster_pb2.ListGroupsRequest, call: Call
    ) -> client_pb2.GroupSearchReply:
        """One page of every group (operators), ascending by id. INVALID_ARGUMENT over 1,000."""
        limit = req.limit or LIST_PAGE_DEFAULT
        if limit > LIST_PAGE_MAX:
            raise RpcError(pb.INVALID_ARGUMENT, f"limit: at most {LIST_PAGE_MAX}")
        return await self.ctx.db(self._list, req.cursor, limit)

    def _list(self, after: int, limit: int) -> client_pb2.GroupSearchReply:
        return client_pb2.GroupSearchReply(
            groups=self.infos(group_rows.page(self.ctx.store, after, limit))
        )

    async def group_join(
        self, req: cluster_pb2.DirGroupRequest, call: Call
    ) -> client_pb2.GroupJoinReply:
        """Join. NOT_FOUND, ALREADY_MEMBER, GROUP_FULL."""
        user_id = validation.user_id(req.user_id)
        group_id = validation.user_id(req.group_id, "group_id")
        info = await self.ctx.db(self._join, group_id, user_id)
        await self.ctx.announce(caches.membership_changed(group_id, user_id, True))
        return client_pb2.GroupJoinReply(group=info)

    def _join(self, group_id: int, user_id: int) -> client_pb2.GroupInfo:
        return self.infos([group_rows.join(self.ctx.store, group_id, user_id, now_ms())])[0]

    async def group_leave(
        self, req: cluster_pb2.DirGroupRequest, call: Call
    ) -> client_pb2.GroupLeaveReply:
        """Leave. NOT_FOUND, NOT_MEMBER."""
        user_id = validation.user_id(req.user_id)
        group_id = validation.user_id(req.group_id, "group_id")
        await self.ctx.db(group_rows.leave, self.ctx.store, group_id, user_id)
        await self.ctx.announce(caches.membership_changed(group_id, user_id, False))
        return client_pb2.GroupLeaveReply()

    async def group_settings(
        self, req: cluster_pb2.DirGroupSettingsRequest, call: Call
    ) -> client_pb2.GroupSettingsReply:
        """The owner changes the rules. NOT_FOUND, FORBIDDEN, INVALID_ARGUMENT.

        A history change reaches every cached access answer of the group's members (their
        floors change): one membership invalidation per member.
        """
        user_id = validation.user_id(req.user_id)
        group_id = validation.user_id(req.group_id, "group_id")
        visibility, history = validation.group_rule_change(req.visibility, req.history)
        row, changed = await self.ctx.db(
            group_rows.settings, self.ctx.store, group_id, user_id, visibility, history, now_ms()
        )
        if changed:
            members = (await self.access.members([group_id]))[group_id] or ()
            await self.ctx.announce(
                cluster_pb2.CacheInvalidation(
                    items=[
                        item
                        for m in members
                        for item in caches.membership_changed(group_id, m, True).items
                    ]
                )
            )
        [info] = await self.ctx.db(self.infos, [row])
        return client_pb2.GroupSettingsReply(group=info)

    async def group_invite(
        self, req: cluster_pb2.DirGroupInviteRequest, call: Call
    ) -> client_pb2.GroupInviteReply:
        """The owner invites a user. NOT_FOUND, FORBIDDEN, ALREADY_MEMBER."""
        owner = validation.user_id(req.user_id)
        group_id = validation.user_id(req.group_id, "group_id")
        invitee = validation.user_id(req.invitee_id, "user_id")
        await self.ctx.db(self._invite, group_id, owner, invitee)
        return client_pb2.GroupInviteReply()

    def _invite(self, group_id: int, owner: int, invitee: int) -> None:
        found = account_rows.users(self.ctx.store, [invitee]).get(invitee)
        if found is None or user_rows.is_deleted(found):
            raise RpcError(pb.NOT_FOUND, f"no user {invitee}")
        group_rows.invite(self.ctx.store, group_id, owner, invitee, now_ms())

    async def group_users(
        self, req: cluster_pb2.DirGroupRequest, call: Call
    ) -> client_pb2.GroupUsersReply:
        """The members, by account, for a member only. NOT_FOUND, NOT_MEMBER."""
        members = (await self.access.members([req.group_id]))[req.group_id]
        if members is None:
            raise RpcError(pb.NOT_FOUND, f"no group {req.group_id}")
        if req.user_id not in members:
            raise RpcError(pb.NOT_MEMBER, "only members see the member list")
        people = await self.ctx.db(self.accounts.records, list(members))
        listed = sorted(people.values(), key=lambda u: u.account)
        return client_pb2.GroupUsersReply(
            group_id=req.group_id,
            members=[
                client_pb2.GroupMember(
                    user_id=u.user_id,
                    account=u.account,
                    nickname=u.nickname,
                    last_active_ms=u.last_active_ms,
                )
                for u in listed
            ],
        )

    async def group_members(
        self, req: cluster_pb2.GroupIds, call: Call
    ) -> cluster_pb2.GroupMembersReply:
        """Member ids of the known groups among those asked, in request order."""
        found = await self.access.members(req.group_ids)
        return cluster_pb2.GroupMembersReply(
            groups=[
                cluster_pb2.GroupMemberIds(group_id=g, user_ids=found[g])
                for g in dict.fromkeys(req.group_ids)
                if found[g] is not None
            ]
        )

    def infos(self, rows: list[GroupRow]) -> list[client_pb2.GroupInfo]:
        owners = account_rows.users(self.ctx.store, [r.owner for r in rows])
        return [
            client_pb2.GroupInfo(
                group_id=r.group_id,
                name=r.name,
                user_limit=r.user_limit,
                members=r.members,
                owner=r.owner,
                owner_account=owners[r.owner].account if r.owner in owners else "",
                created_ms=r.created_ms,
                visibility=client_pb2.GroupVisibility.ValueType(r.visibility),
                history=client_pb2.GroupHistory.ValueType(r.history),
            )
            for r in rows
        ]
