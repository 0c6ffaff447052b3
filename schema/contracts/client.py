"""The client plane's contract (schema/client.proto, `service Client`): served by gateways,
called by `soim` and the benchmarks.

Role: the `client.*` method catalogue, the method of pushed events, which methods a connection
may call before it logs in, and the limits of the History and search requests that both a
gateway and the storage nodes behind it check (a message's own bounds are in
`schema.contracts.message`). No sockets.
"""

from __future__ import annotations

import re

from fabric.methods import Method, RpcError, catalogue
from schema import client_pb2
from schema import common_pb2 as pb

CLIENT: dict[str, Method] = catalogue(client_pb2.DESCRIPTOR.services_by_name["Client"])

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

HISTORY_DEFAULT = 50
"""Messages of a History page when `limit` is 0."""
HISTORY_MAX = 100

SEARCH_DEFAULT = 20
"""Results of a SearchMessages page when `limit` is 0."""
SEARCH_MAX = 50
MAX_QUERY_CHARS = 200
_WORD = re.compile(r"\w")


def check_search(req: client_pb2.SearchMessagesRequest) -> None:
    """INVALID_ARGUMENT unless `req` is a search both a gateway and a storage node will run:
    1-MAX_QUERY_CHARS characters holding a word (letters or digits), a limit of at most
    SEARCH_MAX, and a page position of both before_ts_ms and before_msg_id or neither."""
    if not 0 < len(req.query) <= MAX_QUERY_CHARS:
        raise RpcError(pb.INVALID_ARGUMENT, f"a search needs 1-{MAX_QUERY_CHARS} characters")
    if req.limit > SEARCH_MAX:
        raise RpcError(pb.INVALID_ARGUMENT, f"limit: at most {SEARCH_MAX}")
    if bool(req.before_ts_ms) != bool(req.before_msg_id):
        raise RpcError(pb.INVALID_ARGUMENT, "page with both before_ts_ms and before_msg_id")
    if not _WORD.search(req.query):
        raise RpcError(pb.INVALID_ARGUMENT, "a search needs a word (letters or digits)")
