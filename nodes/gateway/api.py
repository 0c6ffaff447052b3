"""The client plane's method table as the gateway serves it.

Role: the `client.*` RPC catalogue (from client.proto's `service Client`), the push method name,
and which methods an unauthenticated connection may call. No sockets.
"""

from fabric.methods import catalogue
from schema import client_pb2

CLIENT = catalogue(
    client_pb2.DESCRIPTOR.services_by_name["Client"],
    idempotent=[
        "Resume",
        "Ping",
        "Me",
        "Sync",
        "History",
        "Delivered",
        "Read",
        "GroupReadCounts",
        "OnlineUsers",
        "Friends",
        "SearchUsers",
        "Groups",
        "GroupSearch",
        "GroupUsers",
        "SearchMessages",
        "Send",
    ],  # Send is idempotent: the same client_msg_id is stored once
)

PUSH_METHOD = "client.Push"
"""Method name of every EVENT frame a gateway pushes to a client (payload: client.Push)."""

PRE_AUTH = frozenset({CLIENT[n].name for n in ("Register", "Login", "Resume", "Ping")})
"""The only methods a connection may call before it has logged in."""

RESUME_METHOD = CLIENT["Resume"].name

AUTHENTICATING = frozenset(
    {CLIENT[n].name for n in ("Register", "Login", "Resume", "ChangePassword", "DeleteAccount")}
)
"""The methods that open a session or check a password (each may cost a password hash):
rate-limited per connection and per source address before login, per connection after."""
