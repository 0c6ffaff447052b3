"""The storage node's public surface: its RPC catalogue.

Role: the names gateways call on a storage node's RPC ROUTER — StoreBatch, History, Sync,
Cursors, GroupReadCounts, Search (schema/cluster.proto, service Storage). All are idempotent: stores
dedup on (conversation, sender, client_msg_id) and cursors only move forward. No sockets.
"""

from fabric.methods import Method, catalogue
from schema import cluster_pb2

STORAGE: dict[str, Method] = catalogue(
    cluster_pb2.DESCRIPTOR.services_by_name["Storage"],
    idempotent=["StoreBatch", "History", "Sync", "Cursors", "GroupReadCounts", "Search"],
)
