"""Directory rpcs of account administration: ListUsers and DeleteUser (soimctl user list,
user delete).

Role: page through every account in name order with its record and last-active time; delete
an account (nodes.directory.user_rows), then invalidate the caches of the friendships and
memberships it had, of its record, and end its live sessions on every gateway (SessionsEnd).
Peer sockets: none of its own (served on the node's RPC ROUTER; publishes through `Context`).
"""

from __future__ import annotations

from fabric.methods import RpcError
from fabric.rpc_server import Call
from nodes.directory import account_rows, user_rows, validation
from nodes.directory.accounts import Accounts
from nodes.directory.caches import friendship_changed, membership_changed
from nodes.directory.context import Context
from schema import cluster_pb2
from schema import common_pb2 as pb

PAGE_DEFAULT, PAGE_MAX = 100, 1000
DELETED = "this account was deleted"


class UserAdmin:
    """The account administration handlers over one `Context`."""

    def __init__(self, ctx: Context, accounts: Accounts) -> None:
        self.ctx = ctx
        self.accounts = accounts

    async def list_users(
        self, req: cluster_pb2.ListUsersRequest, call: Call
    ) -> cluster_pb2.DirUsersReply:
        """One page of accounts after `after`, in name order, with last-active times."""
        prefix = validation.account_prefix(req.prefix) if req.prefix else ""
        limit = min(req.limit or PAGE_DEFAULT, PAGE_MAX)
        ids = await self.ctx.db(user_rows.page, self.ctx.store, prefix, req.after, limit)
        found = await self.ctx.db(self.accounts.records, ids)
        return cluster_pb2.DirUsersReply(users=[found[u] for u in ids if u in found])

    async def delete_user(
        self, req: cluster_pb2.UserRef, call: Call
    ) -> cluster_pb2.DeleteUserReply:
        """Delete an account; its messages stay, shown as from `deleted#<id>`. NOT_FOUND."""
        ctx = self.ctx
        found = await ctx.db(account_rows.users, ctx.store, [req.user_id])
        if req.user_id not in found:
            raise RpcError(pb.NOT_FOUND, f"no user {req.user_id}")
        user = found[req.user_id]
        removed = await ctx.db(user_rows.delete, ctx.store, user)
        ctx.end_sessions([user.user_id], DELETED)
        items = [cluster_pb2.Invalidation(user_id=user.user_id)]
        for friend in removed.friends:
            items += friendship_changed(user.user_id, friend).items
        for group_id in removed.groups:
            items += membership_changed(group_id, user.user_id, member=False).items
        await ctx.announce(cluster_pb2.CacheInvalidation(items=items))
        return cluster_pb2.DeleteUserReply(
            user=user,
            friendships=len(removed.friends),
            groups_left=len(removed.groups),
            groups_handed_over=removed.handed_over,
        )
