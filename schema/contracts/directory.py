"""The directory's contract (schema/cluster.proto, `service Directory`): called by gateways,
storage nodes and soimctl; its events are followed by gateways, storage nodes and the other
directories.

Role: the method catalogue (only the read-only rpcs and VerifyToken(s) are marked idempotent,
so only those are ever retried by a caller), the two events a directory publishes on its events
PUB — `CacheInvalidation` (topic INVALIDATION_TOPIC) after a write that changes friendships,
memberships or users, and `SessionsEnd` (topic END_TOPIC) when sessions must end — and the
limits of its batched calls. No sockets.
"""

from __future__ import annotations

from fabric.methods import Method, catalogue
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

DIRECTORY: dict[str, Method] = catalogue(
    cluster_pb2.DESCRIPTOR.services_by_name["Directory"], idempotent=IDEMPOTENT
)

INVALIDATION_TOPIC = b"inv"
INVALIDATION_METHOD = "directory.CacheInvalidation"
"""Topic and method of the `cluster_pb2.CacheInvalidation` events on a directory's events PUB."""

END_TOPIC = b"end"
END_METHOD = "directory.SessionsEnd"
"""Topic and method of the `cluster_pb2.SessionsEnd` events on a directory's events PUB."""

MAX_TOKENS_PER_CALL = 500
"""Tokens in one VerifyTokens or CheckTokens (more: INVALID_ARGUMENT)."""
