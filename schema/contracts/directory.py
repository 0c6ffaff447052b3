"""The directory's contract (schema/cluster.proto, `service Directory`): called by gateways,
storage nodes and soimctl; its events are followed by gateways, storage nodes and the other
directories.

Role: the method catalogue (each rpc may be retried as its `idempotency_level` in the .proto
says), the two events a directory publishes on its events
PUB — `CacheInvalidation` (topic INVALIDATION_TOPIC) after a write that changes friendships,
memberships or users, and `SessionsEnd` (topic END_TOPIC) when sessions must end — and the
limits of its batched calls. No sockets.
"""

from __future__ import annotations

from fabric.methods import Method, catalogue
from schema import cluster_pb2

DIRECTORY: dict[str, Method] = catalogue(cluster_pb2.DESCRIPTOR.services_by_name["Directory"])

INVALIDATION_TOPIC = b"inv"
INVALIDATION_METHOD = "directory.CacheInvalidation"
"""Topic and method of the `cluster_pb2.CacheInvalidation` events on a directory's events PUB."""

END_TOPIC = b"end"
END_METHOD = "directory.SessionsEnd"
"""Topic and method of the `cluster_pb2.SessionsEnd` events on a directory's events PUB."""

MAX_TOKENS_PER_CALL = 500
"""Tokens in one VerifyTokens or CheckTokens (more: INVALID_ARGUMENT)."""
