"""The directory node: accounts, friends and groups over shard_store.

Role: a stateless member of the cluster (any directory serves any request) that opens the
store, the id allocator and (with SOIM_REDIS_URL) Redis at start, serves the Directory rpcs of
schema/cluster.proto (catalogue in schema.contracts.directory), and keeps its caches fresh from the
CacheInvalidation events every directory publishes. Handlers live in accounts, friends, groups
and access; blocking work runs in the worker pools of `context.Context`.
Peer sockets: those of `fabric.node.Node` — RPC ROUTER (Directory rpcs), events PUB (also
CacheInvalidation, topic "inv"), events SUB (listens to "inv" of every peer), peer DEALERs —
plus the store's database connections and the Redis connection of shard_store's `Cache`.
"""

from __future__ import annotations

import asyncio
import logging

from fabric import envelope, readiness, timing
from fabric.config import Config, ConfigError
from fabric.keys import TOKEN_SECRET, load_secret
from fabric.node import Node
from fabric.rpc_server import Handler
from nodes.directory import account_rows, stats
from nodes.directory.access import Access
from nodes.directory.accounts import Accounts
from nodes.directory.caches import L2
from nodes.directory.context import KDF_THREADS, Context, KdfGate
from nodes.directory.friends import Friends
from nodes.directory.groups import Groups
from nodes.directory.options import DirectoryOptions
from nodes.directory.revocation import Revocation
from nodes.directory.social import Social
from nodes.directory.throttle import LocalCounters, LoginThrottle, RedisCounters
from nodes.directory.tokens import TokenSigner, signing_key
from nodes.directory.user_admin import UserAdmin
from schema import cluster_pb2
from schema.contracts.directory import DIRECTORY, INVALIDATION_METHOD, INVALIDATION_TOPIC
from shard_store.backend import StoreUnavailable
from shard_store.cache import Cache, CacheUnavailable
from shard_store.segments import SegmentAllocator
from shard_store.settings import SettingError, StoreSettings
from shard_store.store import Store

log = logging.getLogger(__name__)


class DirectoryNode(Node):
    """A directory."""

    role = "directory"
    shared: Context | None = None
    store: Store | None = None
    ids: SegmentAllocator | None = None
    cache: Cache | None = None
    db_check: readiness.DbCheck | None = None

    def __init__(self, cfg: Config) -> None:
        try:  # a bad store setting stops the node before it loads keys or binds a socket
            self.store_settings = StoreSettings.from_env(cfg.extra)
        except SettingError as err:
            raise ConfigError(err.var, err.problem) from None
        super().__init__(cfg)

    async def on_start(self) -> None:
        cfg = self.cfg
        options = DirectoryOptions.from_extra(cfg.extra)
        signer = TokenSigner(
            signing_key(load_secret(cfg.keys_dir, TOKEN_SECRET)), options.token_ttl_s
        )
        settings = self.store_settings
        try:
            self.store = await asyncio.to_thread(Store.from_settings, settings)
        except SettingError as err:
            raise ConfigError(err.var, err.problem) from None
        except StoreUnavailable as err:
            raise ConfigError("SOIM_DB", str(err).removeprefix("SOIM_DB: ")) from None
        await asyncio.to_thread(account_rows.ensure_seen, self.store)
        self.db_check = readiness.DbCheck(self.store.ping)
        self.ids = SegmentAllocator(self.store)
        try:
            self.cache = await asyncio.to_thread(Cache.from_settings, settings)
        except CacheUnavailable as err:
            raise ConfigError("SOIM_REDIS_URL", str(err).removeprefix("SOIM_REDIS_URL: ")) from None
        counters = RedisCounters(self.cache) if self.cache is not None else LocalCounters()
        self.shared = ctx = Context(
            store=self.store,
            ids=self.ids,
            options=options,
            signer=signer,
            throttle=LoginThrottle(counters),
            publish=self.publisher.publish,
            l2=L2(self.cache) if self.cache is not None else None,
            kdf_gate=KdfGate(KDF_THREADS * timing.KDF_QUEUE_JOBS_PER_THREAD, options.kdf_per_addr),
        )
        accounts, friends, access = Accounts(ctx), Friends(ctx), Access(ctx)
        groups = Groups(ctx, access, accounts)
        ends = Revocation(ctx)
        admin = UserAdmin(ctx, accounts)
        social = Social(ctx, accounts, groups, ends, admin)
        handlers: dict[str, Handler] = {
            "Register": accounts.register,
            "Login": stats.counted_logins(accounts.login),
            "VerifyToken": accounts.verify_token,
            "VerifyTokens": accounts.verify_tokens,
            "Users": accounts.users,
            "Touch": accounts.touch,
            "SearchUsers": accounts.search_users,
            "Friends": friends.friends,
            "AddFriend": friends.add_friend,
            "CheckAccess": access.check_access,
            "Conversations": access.conversations,
            "Groups": groups.groups,
            "GroupCreate": groups.group_create,
            "GroupSearch": groups.group_search,
            "GroupJoin": groups.group_join,
            "GroupLeave": groups.group_leave,
            "GroupUsers": groups.group_users,
            "GroupMembers": groups.group_members,
            "SetDisabled": ends.set_disabled,
            "ListGroups": groups.list_groups,
            "GroupSettings": groups.group_settings,
            "GroupInvite": groups.group_invite,
            "RevokeToken": ends.revoke_token,
            "EndSessions": ends.end_sessions,
            "SetPassword": ends.set_password,
            "CheckTokens": ends.check_tokens,
            "Unlock": ends.unlock,
            "ListUsers": admin.list_users,
            "DeleteUser": admin.delete_user,
            "RemoveFriend": social.remove_friend,
            "Block": social.block,
            "Contacts": social.contacts,
            "GroupKick": social.group_kick,
            "GroupOwner": social.group_owner,
            "ChangePassword": social.change_password,
            "DeleteAccount": social.delete_account,
        }
        for name, method in DIRECTORY.items():
            self.rpc.register(method, handlers[name])
        self.subscriber.on(INVALIDATION_TOPIC, self._invalidated)

    async def ready(self) -> str | None:
        """Ready while its database answers (a cached SELECT 1, off the event loop)."""
        return await self.db_check.reason() if self.db_check is not None else "starting"

    async def on_stop(self) -> None:
        if self.shared is not None:
            await asyncio.to_thread(self.shared.close)
        if self.ids is not None:
            self.ids.close()
        if self.store is not None:
            self.store.close()
        if self.cache is not None:
            self.cache.close()

    def _invalidated(self, topic: bytes, env: envelope.Envelope) -> None:
        """A peer's CacheInvalidation: drop what it names from the in-process caches."""
        if env.header.method != INVALIDATION_METHOD or self.shared is None:
            return
        try:
            inv = envelope.parse_payload(cluster_pb2.CacheInvalidation, env.payload)
        except envelope.EnvelopeError:
            log.warning("bad CacheInvalidation from %s", env.header.sender)
            return
        self.shared.l1.apply(inv)
