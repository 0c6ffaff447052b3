"""The bounds of one chat message, the same on every layer: the client's `SendRequest`, the
gateway's and the storage node's checks of it, and the store's columns (`shard_store`).

Role: constants only, with no imports, so the store can size its columns by them without
depending on the RPC layer. No sockets.
"""

MAX_BODY_CHARS = 4000
"""Characters of a message body (BODY_TOO_LONG past it)."""
MAX_CLIENT_MSG_ID_CHARS = 64
"""Characters of a client_msg_id (at least one)."""
MAX_MENTIONS = 10
"""User ids a group message may mention."""
