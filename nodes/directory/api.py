"""The Directory RPC catalogue: the method specs gateways (and soimctl) call a directory with.

Role: one name, `DIRECTORY`, mapping each rpc of `service Directory` (schema/cluster.proto) to
its `fabric.methods.Method`; only the read-only rpcs and VerifyToken(s) are marked idempotent, so
only those are ever retried by a caller. No sockets.
"""

from __future__ import annotations

from fabric.methods import catalogue
from schema import cluster_pb2

IDEMPOTENT = (
    "VerifyToken",
    "VerifyTokens",
    "Users",
    "Touch",
    "SearchUsers",
    "Friends",
    "CheckAccess",
    "Conversations",
    "Groups",
    "GroupSearch",
    "GroupUsers",
    "GroupMembers",
    "SetDisabled",
    "ListGroups",
    "RevokeToken",
    "EndSessions",
    "SetPassword",
    "CheckTokens",
    "Unlock",
    "GroupSettings",
    "GroupInvite",
    "ListUsers",
    "DeleteUser",
    "Block",
    "Contacts",
)
"""Retried on TIMEOUT/UNAVAILABLE. AddFriend is idempotent by its semantics (asking twice
leaves one request) but is not retried: a retry after an accept would answer ALREADY_FRIENDS."""

DIRECTORY = catalogue(cluster_pb2.DESCRIPTOR.services_by_name["Directory"], idempotent=IDEMPOTENT)
