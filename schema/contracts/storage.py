"""The storage node's contract (schema/cluster.proto, `service Storage`): called by gateways.

Role: the catalogue of StoreBatch, History, Sync, Cursors, GroupReadCounts and Search, all
idempotent (stores dedup on (conversation, sender, client_msg_id), cursors only move forward),
and the limits a caller must keep. No sockets.
"""

from __future__ import annotations

from fabric.methods import Method, catalogue
from schema import cluster_pb2

STORAGE: dict[str, Method] = catalogue(cluster_pb2.DESCRIPTOR.services_by_name["Storage"])

MAX_SCOPES = 1000
"""Conversations in one Storage.Search (more: INVALID_ARGUMENT)."""
