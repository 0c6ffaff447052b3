"""Curve on every socket, and the ZAP authenticator that decides who may connect.

Role: put keys on sockets and answer ZAP requests. Its one socket is the authenticator's REP on
inproc://zeromq.zap.01 of the node's context; its peers are libzmq's ZAP clients inside every
Curve server socket of that context:

- "cluster" domain (RPC ROUTER, events PUB, ...): a client is admitted only when its public key
  is one of the certificate files in keys_dir/authorized (the node keys the cluster admits).
  `watch()` re-reads that folder every KEYS_RELOAD_INTERVAL_S, so a key removed there
  (`soimctl keys revoke`) is refused from the next handshake on, and the node is told which
  keys went (to drop those peers and refuse their requests on connections already open);
- "client" domain (the gateway's client ROUTER): any Curve client is admitted (a `soim` client has
  no cluster key; it proves nothing but that it speaks Curve to the right server key; users log
  in afterwards).

A plain-text (NULL) peer never completes a handshake with a Curve server, so it gets nothing.

pyzmq's `configure_curve(location=CURVE_ALLOW_ANY)` switches on a flag that covers *every*
domain, which would open the cluster domain as well; so each domain gets its own key policy
through `configure_curve_callback` instead.

Order: `Security.start()` runs (inside the event loop) before any socket binds. Server sockets
are also marked ZAP_ENFORCE_DOMAIN, so a socket bound while no authenticator runs refuses
every client instead of admitting all of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from fabric import keys, timing

log = logging.getLogger(__name__)
CLUSTER_DOMAIN = "cluster"
CLIENT_DOMAIN = "client"


class _ClusterKeys:
    """ZAP policy of the cluster domain: the authorized z85 public keys (replaced on reload)."""

    def __init__(self, authorized: frozenset[bytes]) -> None:
        self.authorized = authorized

    def callback(self, domain: str, key: bytes) -> bool:
        return domain == CLUSTER_DOMAIN and key in self.authorized


class _AnyClient:
    """ZAP policy of the client domain: every Curve client may try to log in."""

    def callback(self, domain: str, key: bytes) -> bool:
        return domain == CLIENT_DOMAIN


class Security:
    """The ZAP authenticator of one context plus the keys its sockets use."""

    def __init__(self, ctx: zmq.asyncio.Context, keys_dir: Path, node_key: str = keys.NODE) -> None:
        self.ctx = ctx
        self.keys_dir = Path(keys_dir)
        self.node = keys.load_node(self.keys_dir, node_key)
        self._names = keys.authorized(self.keys_dir)
        self._policy = _ClusterKeys(frozenset(self._names))
        self._gateway: keys.KeyPair | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._watcher: asyncio.Task[None] | None = None

    def authorized(self, key: bytes) -> bool:
        """Whether the cluster admits the z85 public key `key` now."""
        return key in self._policy.authorized

    def authorized_names(self) -> dict[bytes, str]:
        """The admitted keys now, each with its name (the file stem in authorized/)."""
        return dict(self._names)

    def watch(self, on_change: Callable[[frozenset[bytes], frozenset[bytes]], None]) -> None:
        """Re-read keys_dir/authorized every KEYS_RELOAD_INTERVAL_S; call
        `on_change(revoked, added)` when the set changed. Runs until `stop()`."""
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch(on_change))

    def reload(self) -> tuple[frozenset[bytes], frozenset[bytes]]:
        """Re-read the authorized keys now; return (revoked, added). A folder that cannot be
        read, or holds no key, keeps the current set (logged)."""
        try:
            names = keys.authorized(self.keys_dir)
        except keys.KeysMissing as err:
            log.error("keeping the authorized keys I have: %s", err)
            return frozenset(), frozenset()
        self._names, fresh = names, frozenset(names)
        gone, added = self._policy.authorized - fresh, fresh - self._policy.authorized
        if gone or added:
            log.info(
                "authorized node keys: %d (%d revoked, %d added)", len(fresh), len(gone), len(added)
            )
            self._policy.authorized = fresh
        return gone, added

    async def _watch(self, on_change: Callable[[frozenset[bytes], frozenset[bytes]], None]) -> None:
        while True:
            await asyncio.sleep(timing.KEYS_RELOAD_INTERVAL_S)  # the reload period
            gone, added = self.reload()
            if gone or added:
                try:
                    on_change(gone, added)
                except Exception:
                    log.exception("handling changed node keys failed")

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._auth is not None

    def start(self) -> None:
        """Start answering ZAP requests; call from the running event loop, before any bind."""
        if self._auth is not None:
            raise RuntimeError("Security already started")
        auth = AsyncioAuthenticator(self.ctx)
        auth.configure_curve_callback(CLUSTER_DOMAIN, credentials_provider=self._policy)
        auth.configure_curve_callback(CLIENT_DOMAIN, credentials_provider=_AnyClient())
        auth.start()
        self._auth = auth

    def stop(self) -> None:
        """Stop the authenticator and close its socket; from then on every handshake fails."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def cluster_server(self, sock: zmq.Socket) -> None:
        """Make `sock` a Curve server with this node's key, admitting only authorized keys."""
        self._server(sock, self.node.secret, CLUSTER_DOMAIN)

    def client_server(self, sock: zmq.Socket) -> None:
        """Make `sock` the gateway's Curve server for `soim` clients (any client key)."""
        if self._gateway is None:
            self._gateway = keys.load_client_plane(self.keys_dir)
        self._server(sock, self._gateway.secret, CLIENT_DOMAIN)

    def cluster_client(self, sock: zmq.Socket, server_public: bytes) -> None:
        """Make `sock` a Curve client of the peer whose server key is `server_public`,
        presenting this node's keypair. Refuses (ValueError) a key the cluster does not admit:
        a node never dials a key that is not authorized."""
        if not self.authorized(server_public):
            raise ValueError("not an authorized node key")
        _client(sock, self.node, server_public)

    def _server(self, sock: zmq.Socket, secret: bytes, domain: str) -> None:
        if self._auth is None:
            raise RuntimeError("Security.start() must run before a server socket is set up")
        sock.curve_secretkey = secret
        sock.curve_server = True
        sock.zap_domain = domain.encode()
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def anonymous_client(sock: zmq.Socket, server_public: bytes) -> None:
    """Make `sock` a Curve client with a fresh ephemeral keypair (a `soim` client has no keys)."""
    public, secret = zmq.curve_keypair()
    _client(sock, keys.KeyPair(public=public, secret=secret), server_public)


def _client(sock: zmq.Socket, pair: keys.KeyPair, server_public: bytes) -> None:
    sock.curve_secretkey = pair.secret
    sock.curve_publickey = pair.public
    sock.curve_serverkey = server_public
