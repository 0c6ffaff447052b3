"""Directory rpcs a user runs on its own relations: RemoveFriend, Block, Contacts, GroupKick,
GroupOwner, ChangePassword and DeleteAccount.

Role: validate, write (database threads: friend_rows, block_rows, group_owner_rows), and
announce each change so every directory, gateway and storage node drops what it cached of it
(a block or unblock announces the pair's friendship, which drops both the gateways' cached send
permissions and the directories' cached blocks). ChangePassword and DeleteAccount check the
password as a login does (throttled) and then do what the operators' SetPassword and DeleteUser
do (nodes.directory.revocation, nodes.directory.user_admin).
Peer sockets: none of its own (served on the node's RPC ROUTER; publishes through `Context`).
"""

from __future__ import annotations

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.directory import (
    account_rows,
    block_rows,
    caches,
    friend_rows,
    group_owner_rows,
    group_rows,
    user_rows,
    validation,
)
from nodes.directory.accounts import Accounts
from nodes.directory.context import Context
from nodes.directory.groups import Groups
from nodes.directory.revocation import Revocation
from nodes.directory.tokens import now_ms
from nodes.directory.user_admin import UserAdmin
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb

CONTACTS_MAX = 20_000
"""Most user ids in a Contacts answer (the smallest ids are kept)."""


class Social:
    """A user's own relation and account handlers over one `Context`."""

    def __init__(
        self, ctx: Context, accounts: Accounts, groups: Groups, ends: Revocation, admin: UserAdmin
    ) -> None:
        self.ctx = ctx
        self.accounts = accounts
        self.groups = groups
        self.ends = ends
        self.admin = admin

    # ---- friends and blocks
    async def remove_friend(
        self, req: cluster_pb2.DirRemoveFriendRequest, call: Call
    ) -> client_pb2.RemoveFriendReply:
        """Unfriend, withdraw or decline. NOT_FOUND."""
        me = validation.user_id(req.user_id)
        other = validation.user_id(req.friend_id, "friend_id")
        conv_id = await self.ctx.db(friend_rows.remove, self.ctx.store, me, other, req.decline)
        await self.ctx.announce(caches.friendship_changed(me, other, conv_id))
        return client_pb2.RemoveFriendReply(conv_id=conv_id)

    async def block(self, req: cluster_pb2.DirBlockRequest, call: Call) -> client_pb2.BlockReply:
        """Block or unblock. NOT_FOUND (no such user), INVALID_ARGUMENT (oneself)."""
        me = validation.user_id(req.user_id)
        other = validation.user_id(req.other_id, "user_id")
        if me == other:
            raise RpcError(pb.INVALID_ARGUMENT, "you cannot block yourself")
        await self.ctx.db(self._block, me, other, req.blocked)
        await self.ctx.announce(caches.friendship_changed(me, other))
        return client_pb2.BlockReply()

    def _block(self, me: int, other: int, blocked: bool) -> None:
        store = self.ctx.store
        found = account_rows.users(store, [other]).get(other)
        if found is None or user_rows.is_deleted(found):
            raise RpcError(pb.NOT_FOUND, f"no user {other}")
        if blocked:
            block_rows.block(store, me, other, now_ms())
        else:
            block_rows.unblock(store, me, other)

    async def contacts(
        self, req: cluster_pb2.ContactsRequest, call: Call
    ) -> cluster_pb2.ContactsReply:
        """Friends, co-members and the user itself (whom it may see online), and who has
        blocked the user; or its audience (who may see it online) and its account."""
        if req.audience:
            return await self.ctx.db(self._audience, req.user_id)
        return await self.ctx.db(self._contacts, req.user_id, req.blockers_only)

    def _audience(self, user_id: int) -> cluster_pb2.ContactsReply:
        """The users whose Contacts list `user_id`: its friends and co-members except those it
        has blocked (a user who has blocked it still sees it online), not itself."""
        store = self.ctx.store
        seen = self._related(user_id)
        seen.difference_update(block_rows.of_user(store, user_id, mine=True))
        seen.discard(user_id)
        found = account_rows.users(store, [user_id]).get(user_id)
        return cluster_pb2.ContactsReply(
            contacts=sorted(seen)[:CONTACTS_MAX], account=found.account if found else ""
        )

    def _related(self, user_id: int) -> set[int]:
        """Accepted friends and members of the user's groups (itself among them if in one)."""
        store = self.ctx.store
        seen = {r.friend_id for r in friend_rows.of_user(store, user_id) if r.accepted}
        for members in group_rows.members(store, group_rows.of_user(store, user_id)).values():
            seen.update(members)
        return seen

    def _contacts(self, user_id: int, blockers_only: bool) -> cluster_pb2.ContactsReply:
        store = self.ctx.store
        if blockers_only:
            return cluster_pb2.ContactsReply(
                blockers=block_rows.of_user(store, user_id, mine=False)
            )
        seen = self._related(user_id)
        blockers = block_rows.of_user(store, user_id, mine=False)
        seen.difference_update(blockers)
        seen.add(user_id)
        return cluster_pb2.ContactsReply(contacts=sorted(seen)[:CONTACTS_MAX], blockers=blockers)

    # ---- the owner's acts on group members
    async def group_kick(
        self, req: cluster_pb2.DirGroupMemberRequest, call: Call
    ) -> client_pb2.GroupKickReply:
        """Remove a member. NOT_FOUND, FORBIDDEN, INVALID_ARGUMENT, NOT_MEMBER."""
        owner, group_id, member = _member_request(req)
        await self.ctx.db(group_owner_rows.kick, self.ctx.store, group_id, owner, member)
        await self.ctx.announce(caches.membership_changed(group_id, member, False))
        return client_pb2.GroupKickReply()

    async def group_owner(
        self, req: cluster_pb2.DirGroupMemberRequest, call: Call
    ) -> client_pb2.GroupOwnerReply:
        """Hand the group over. NOT_FOUND, FORBIDDEN, NOT_MEMBER."""
        owner, group_id, heir = _member_request(req)
        row = await self.ctx.db(group_owner_rows.hand_over, self.ctx.store, group_id, owner, heir)
        [info] = await self.ctx.db(self.groups.infos, [row])
        return client_pb2.GroupOwnerReply(group=info)

    # ---- the account itself
    async def change_password(
        self, req: cluster_pb2.DirChangePasswordRequest, call: Call
    ) -> cluster_pb2.DirAuthReply:
        """Old password to new: every other session ends; a new token for this one.
        BAD_CREDENTIALS, LOCKED_OUT, INVALID_PASSWORD."""
        password = validation.password(req.new_password)
        user = await self._confirmed(req.user_id, req.old_password, req.client_addr)
        user = await self.ends.replace_password(user.user_id, password, req.client_addr, req.keep)
        return await self.ctx.db(self.accounts.authorised, user)

    async def delete_account(
        self, req: cluster_pb2.DirDeleteAccountRequest, call: Call
    ) -> cluster_pb2.DeleteUserReply:
        """Delete the account, confirmed by its password. BAD_CREDENTIALS, LOCKED_OUT."""
        user = await self._confirmed(req.user_id, req.password, req.client_addr)
        return await self.admin.delete_user(cluster_pb2.UserRef(user_id=user.user_id), call)

    async def _confirmed(self, user_id: int, password: str, addr: str) -> cluster_pb2.UserRecord:
        """The user, if `password` is its password (checked and throttled as a login)."""
        found = await self.ctx.db(account_rows.users, self.ctx.store, [user_id])
        if user_id not in found or user_rows.is_deleted(found[user_id]):
            raise RpcError(pb.BAD_CREDENTIALS, "wrong password")
        return await self.accounts.checked(found[user_id].account, password, addr)


def _member_request(req: cluster_pb2.DirGroupMemberRequest) -> tuple[int, int, int]:
    return (
        validation.user_id(req.user_id),
        validation.user_id(req.group_id, "group_id"),
        validation.user_id(req.member_id, "user_id"),
    )
