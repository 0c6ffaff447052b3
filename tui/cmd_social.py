"""The so-im commands on one's own relations and account: unfriend, decline, block, unblock,
group kick, group owner, passwd and delete-account.

Role: run each on a `ClientSession` and say in one line what happened (the command set of
`tui.commands` dispatches here; RpcErrors go back to it, which words them for the user).
Peer sockets: those of the `ClientSession` it is given.
"""

from __future__ import annotations

from schema import client_pb2
from tui import names
from tui.session import ClientSession

RELATIONS = ("unfriend", "decline", "block", "unblock")
"""The commands on one other user, run by `relation`."""


async def relation(name: str, session: ClientSession, who: str) -> str:
    """Run `unfriend`, `decline`, `block` or `unblock` on user `who` (an account name or a
    user id); what happened."""
    user_id, label = await names.user(session, who)
    match name:
        case "unfriend" | "decline":
            reply = await session.call(
                "RemoveFriend",
                client_pb2.RemoveFriendRequest(user_id=user_id, decline=name == "decline"),
            )
            if name == "decline":
                return f"declined the friend request of {label}"
            return (
                f"no longer friends with {label}"
                if reply.conv_id
                else f"friend request to {label} withdrawn"
            )
        case "block":
            await session.call("Block", client_pb2.BlockRequest(user_id=user_id))
            return (
                f"blocked {label}: their messages and friend requests are refused, "
                "and they see you offline"
            )
        case _:
            await session.call("Unblock", client_pb2.BlockRequest(user_id=user_id))
            return f"unblocked {label}"


async def group_member(session: ClientSession, kick: bool, group: str, who: str) -> str:
    """`group kick` (remove member `who`) or `group owner` (hand `group` over to `who`)."""
    group_id, where = await names.group(session, group)
    user_id, label = await names.user(session, who)
    if kick:
        await session.call(
            "GroupKick", client_pb2.GroupKickRequest(group_id=group_id, user_id=user_id)
        )
        return f"removed {label} from {where}"
    reply = await session.call(
        "GroupOwner", client_pb2.GroupOwnerRequest(group_id=group_id, user_id=user_id)
    )
    return f"{reply.group.owner_account or label} owns #{reply.group.name} now"


async def passwd(session: ClientSession, old: str, new: str) -> str:
    """Change my password; my other sessions end, this one goes on with a new token."""
    await session.change_password(old, new)
    return "password changed; your other sessions have ended"


async def delete_account(session: ClientSession, password: str, confirmed: bool) -> str:
    """Delete my account, if `confirmed`; else say what it would do."""
    if not confirmed:
        return (
            "this deletes your account for good: your name, friends and group memberships "
            "go (your messages stay, from deleted#ID). To do it: delete-account -p PASSWORD "
            "--yes"
        )
    await session.delete_account(password)
    return "account deleted; goodbye"
