"""Client commands on one's own relations and account: RemoveFriend, Block, Unblock, GroupKick,
GroupOwner, ChangePassword, DeleteAccount.

Role: like the other people handlers (`commands.Commands`, whose session lookup and background
pushes these share), each takes the user from the session, asks the directory, and tells the
other user where it concerns them (NOTICE_FRIEND_REMOVED, NOTICE_GROUP_REMOVED,
NOTICE_GROUP_OWNER; a block tells nobody). ChangePassword names this session as the one to keep,
holds it out of the token audit while the old token is revoked, and takes the new token into
it.
Peer sockets: none of its own; directories and routers are reached through `Upstream`.
"""

from __future__ import annotations

from typing import Any

from fabric.rpc_server import Call
from nodes.gateway.commands import Commands
from nodes.gateway.sessions import Session, SessionTable
from nodes.gateway.upstream import Upstream
from schema import client_pb2, cluster_pb2


class Social(Commands):
    """The relation and account handlers of one gateway."""

    def __init__(self, node_id: str, sessions: SessionTable, upstream: Upstream) -> None:
        super().__init__(sessions, upstream)
        self.node_id = node_id

    async def remove_friend(
        self, req: client_pb2.RemoveFriendRequest, call: Call
    ) -> client_pb2.RemoveFriendReply:
        me = self._me(call)
        reply = await self.upstream.directory(
            "RemoveFriend",
            cluster_pb2.DirRemoveFriendRequest(
                user_id=me.user_id, friend_id=req.user_id, decline=req.decline
            ),
        )
        what = "ended your friendship" if reply.conv_id else "declined or withdrew a request"
        self._tell(
            me, req.user_id, client_pb2.NOTICE_FRIEND_REMOVED, reply.conv_id, f"{me.account} {what}"
        )
        return reply

    async def block(self, req: client_pb2.BlockRequest, call: Call) -> client_pb2.BlockReply:
        return await self._block(req, call, blocked=True)

    async def unblock(self, req: client_pb2.BlockRequest, call: Call) -> client_pb2.BlockReply:
        return await self._block(req, call, blocked=False)

    async def _block(
        self, req: client_pb2.BlockRequest, call: Call, blocked: bool
    ) -> client_pb2.BlockReply:
        me = self._me(call)
        return await self.upstream.directory(
            "Block",
            cluster_pb2.DirBlockRequest(user_id=me.user_id, other_id=req.user_id, blocked=blocked),
        )

    async def group_kick(
        self, req: client_pb2.GroupKickRequest, call: Call
    ) -> client_pb2.GroupKickReply:
        return await self._owner_acts(
            "GroupKick", req, call, client_pb2.NOTICE_GROUP_REMOVED, "removed you from group {gid}"
        )

    async def group_owner(
        self, req: client_pb2.GroupOwnerRequest, call: Call
    ) -> client_pb2.GroupOwnerReply:
        return await self._owner_acts(
            "GroupOwner",
            req,
            call,
            client_pb2.NOTICE_GROUP_OWNER,
            "handed you group {gid}: you own it now",
        )

    async def _owner_acts(
        self,
        name: str,
        req: client_pb2.GroupKickRequest | client_pb2.GroupOwnerRequest,
        call: Call,
        kind: client_pb2.NoticeKind.ValueType,
        says: str,
    ) -> Any:
        """The owner's Directory.<name> on one member, who is then told what happened."""
        me = self._me(call)
        reply = await self.upstream.directory(
            name,
            cluster_pb2.DirGroupMemberRequest(
                user_id=me.user_id, group_id=req.group_id, member_id=req.user_id
            ),
        )
        self._tell(
            me, req.user_id, kind, req.group_id, f"{me.account} {says.format(gid=req.group_id)}"
        )
        return reply

    async def change_password(
        self, req: client_pb2.ChangePasswordRequest, call: Call
    ) -> client_pb2.ChangePasswordReply:
        me = self._me(call)
        old, me.token = me.token, ""  # out of the token audit while its token is revoked
        try:
            auth = await self.upstream.directory(
                "ChangePassword",
                cluster_pb2.DirChangePasswordRequest(
                    user_id=me.user_id,
                    old_password=req.old_password,
                    new_password=req.new_password,
                    client_addr=call.peer_addr,
                    keep=cluster_pb2.SessionRef(
                        user_id=me.user_id, gateway_id=self.node_id, session_id=me.identity
                    ),
                ),
            )
        except BaseException:
            me.token = old
            raise
        me.token, me.token_expires_ms = auth.token, auth.token_expires_ms
        return client_pb2.ChangePasswordReply(
            token=auth.token, token_expires_ms=auth.token_expires_ms
        )

    async def delete_account(
        self, req: client_pb2.DeleteAccountRequest, call: Call
    ) -> client_pb2.DeleteAccountReply:
        me = self._me(call)
        await self.upstream.directory(
            "DeleteAccount",
            cluster_pb2.DirDeleteAccountRequest(
                user_id=me.user_id, password=req.password, client_addr=call.peer_addr
            ),
        )
        return client_pb2.DeleteAccountReply()

    def _tell(
        self,
        me: Session,
        user_id: int,
        kind: client_pb2.NoticeKind.ValueType,
        conv_id: int,
        text: str,
    ) -> None:
        """Push a Notice from `me` to every session of `user_id` (best effort, in background)."""
        notice = client_pb2.Push(
            notice=client_pb2.Notice(
                kind=kind,
                conv_id=conv_id,
                text=text,
                user=client_pb2.UserSummary(
                    user_id=me.user_id, account=me.account, nickname=me.nickname
                ),
            )
        )
        self._later(self.upstream.deliver([user_id], notice.SerializeToString()))
