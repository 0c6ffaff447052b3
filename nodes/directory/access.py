"""Access facts, cached: who is friends with whom in which conversation, who is in which group.

Role: the CheckAccess and Conversations rpcs, and the cached lookups that they and the group
rpcs share. Lookups go L1 (in process, on the loop) → L2 (Redis, when configured) → the
database, the last two in one database-thread job per request. A conv_id check of a group
carries the member's history floor (group_rows.floors: read from the database for each such
check the gateway's cache misses, never cached here). Peer sockets: none of its own
(served on the node's RPC ROUTER).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from fabric.rpc_server import Call
from nodes.directory import account_rows, block_rows, friend_rows, group_rows, stats
from nodes.directory.caches import Lru, Members, Pair, pair
from nodes.directory.context import Context
from schema import client_pb2, cluster_pb2
from schema import common_pb2 as pb

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Access:
    """Cached friendship and membership facts, and the two rpcs built on them."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # ---- cached lookups
    async def _through_l1(
        self, cache: str, l1: Lru[K, V], keys: Iterable[K], load: Callable[[list[K]], dict[K, V]]
    ) -> dict[K, V]:
        """The value of each key: from `l1`, else by `load` (a database thread) on the keys
        missed, whose answers fill `l1` unless an invalidation came in meanwhile."""
        out: dict[K, V] = {}
        missing: list[K] = []
        for key in dict.fromkeys(keys):
            hit, value = l1.get(key)
            if hit:
                out[key] = value  # type: ignore[assignment]  # a hit holds what was put
            else:
                missing.append(key)
        stats.looked_up(cache, "l1", len(out), len(missing))
        if missing:
            epoch = self.ctx.l1.epoch
            loaded = await self.ctx.db(load, missing)
            if epoch == self.ctx.l1.epoch:
                for key, value in loaded.items():
                    l1.put(key, value)
            out.update(loaded)
        return out

    async def friendships(self, pairs: Iterable[Pair]) -> dict[Pair, int]:
        """conv_id of each pair (0 when not accepted friends)."""
        return await self._through_l1(
            "friendships", self.ctx.l1.friendships, pairs, self._load_friendships
        )

    def _load_friendships(self, pairs: list[Pair]) -> dict[Pair, int]:
        l2 = self.ctx.l2
        found = l2.friendships(pairs) if l2 is not None else {}
        rest = [p for p in pairs if p not in found]
        if l2 is not None:
            stats.looked_up("friendships", "l2", len(found), len(rest))
        if rest:
            convs = friend_rows.conversations(self.ctx.store, rest)
            loaded = {p: convs.get(p, 0) for p in rest}
            if l2 is not None:
                l2.put_friendships(loaded)
            found.update(loaded)
        return found

    async def members(self, group_ids: Iterable[int]) -> dict[int, Members]:
        """Member ids (ascending) of each group; None for a group that does not exist."""
        return await self._through_l1("members", self.ctx.l1.members, group_ids, self._load_members)

    def _load_members(self, group_ids: list[int]) -> dict[int, Members]:
        l2 = self.ctx.l2
        found = l2.members(group_ids) if l2 is not None else {}
        rest = [g for g in group_ids if g not in found]
        if l2 is not None:
            stats.looked_up("members", "l2", len(found), len(rest))
        if rest:
            known = group_rows.members(self.ctx.store, rest)
            loaded: dict[int, Members] = {g: tuple(known[g]) if g in known else None for g in rest}
            if l2 is not None:
                l2.put_members(loaded)
            found.update(loaded)
        return found

    async def direct(self, user_ids: Iterable[int]) -> dict[int, dict[int, int]]:
        """For each user, conv_id → friend of its accepted friendships (L1, then the database)."""
        return await self._through_l1("direct", self.ctx.l1.direct, user_ids, self._load_direct)

    def _load_direct(self, user_ids: list[int]) -> dict[int, dict[int, int]]:
        return {
            u: {
                r.conv_id: r.friend_id for r in friend_rows.of_user(self.ctx.store, u) if r.accepted
            }
            for u in user_ids
        }

    # ---- rpcs
    async def check_access(
        self, req: cluster_pb2.AccessRequest, call: Call
    ) -> cluster_pb2.AccessReply:
        """One AccessResult per check, in order: OK with the conversation, or why not."""
        checks = [(c, c.WhichOneof("target")) for c in req.checks]
        friendships = await self.friendships(
            pair(c.user_id, c.to_user) for c, target in checks if target == "to_user"
        )
        directs = await self.direct(c.user_id for c, target in checks if target == "conv_id")
        members = await self.members(
            [c.to_group for c, target in checks if target == "to_group"]
            + [
                c.conv_id
                for c, target in checks
                if target == "conv_id" and c.conv_id not in directs[c.user_id]
            ]
        )
        strangers = {
            c.to_user
            for c, target in checks
            if target == "to_user"
            and c.user_id != c.to_user
            and not friendships[pair(c.user_id, c.to_user)]
        }
        known = (
            await self.ctx.db(account_rows.users, self.ctx.store, strangers) if strangers else {}
        )
        results = []
        for c, target in checks:
            if not c.user_id or target is None:
                results.append(cluster_pb2.AccessResult(error=pb.NOT_FOUND))
            elif target == "to_user":
                results.append(_to_user(c, friendships[pair(c.user_id, c.to_user)], known))
            elif target == "conv_id" and c.conv_id in directs[c.user_id]:
                results.append(_direct(c.conv_id, directs[c.user_id][c.conv_id]))
            else:
                group_id = c.to_group if target == "to_group" else c.conv_id
                results.append(_group(group_id, c.user_id, members[group_id]))
        await self._refuse_blocked(checks, results)
        readers = {
            (r.conv_id, c.user_id)
            for r, (c, target) in zip(results, checks, strict=True)
            if target == "conv_id" and r.error == pb.OK and r.kind == client_pb2.CONV_KIND_GROUP
        }
        if readers:
            floors = await self.ctx.db(group_rows.floors, self.ctx.store, readers)
            for r, (c, target) in zip(results, checks, strict=True):
                if (r.conv_id, c.user_id) in readers and target == "conv_id":
                    r.floor_seq = floors[(r.conv_id, c.user_id)]
        return cluster_pb2.AccessReply(results=results)

    async def _refuse_blocked(
        self,
        checks: Sequence[tuple[cluster_pb2.AccessCheck, str | None]],
        results: list[cluster_pb2.AccessResult],
    ) -> None:
        """A 1:1 send allowed so far becomes BLOCKED when its recipient blocks the sender."""
        sends = [
            (c.to_user, c.user_id)
            for (c, target), r in zip(checks, results, strict=True)
            if target == "to_user" and r.error == pb.OK
        ]
        if not sends:
            return
        found = await self.blocks(sends)
        for (c, target), r in zip(checks, results, strict=True):
            if target == "to_user" and r.error == pb.OK and found[(c.to_user, c.user_id)]:
                r.Clear()
                r.error = pb.BLOCKED

    async def blocks(self, pairs: Iterable[Pair]) -> dict[Pair, bool]:
        """Whether each (blocker, blocked) pair is a block (L1, then the database)."""
        return await self._through_l1("blocks", self.ctx.l1.blocks, pairs, self._load_blocks)

    def _load_blocks(self, pairs: list[Pair]) -> dict[Pair, bool]:
        found = block_rows.blocked(self.ctx.store, pairs)
        return {p: p in found for p in pairs}

    async def conversations(self, req: cluster_pb2.UserRef, call: Call) -> client_pb2.SyncReply:
        """Every conversation of the user, direct then group, each by conv_id; seqs zero."""
        return await self.ctx.db(self._conversations, req.user_id)

    def _conversations(self, user_id: int) -> client_pb2.SyncReply:
        store = self.ctx.store
        friends = [r for r in friend_rows.of_user(store, user_id) if r.accepted]
        people = account_rows.users(store, [r.friend_id for r in friends])
        groups = group_rows.groups(store, group_rows.of_user(store, user_id))
        floors = group_rows.floors(store, ((g, user_id) for g in groups))
        convs = [
            client_pb2.Conversation(
                conv_id=r.conv_id,
                kind=client_pb2.CONV_KIND_DIRECT,
                peer_id=r.friend_id,
                title=people[r.friend_id].nickname if r.friend_id in people else "",
            )
            for r in sorted(friends, key=lambda r: r.conv_id)
        ]
        convs += [
            client_pb2.Conversation(
                conv_id=g.group_id,
                kind=client_pb2.CONV_KIND_GROUP,
                peer_id=g.group_id,
                title=g.name,
                floor_seq=floors[(g.group_id, user_id)],
            )
            for g in sorted(groups.values(), key=lambda g: g.group_id)
        ]
        return client_pb2.SyncReply(conversations=convs)


def _direct(conv_id: int, peer_id: int) -> cluster_pb2.AccessResult:
    return cluster_pb2.AccessResult(
        error=pb.OK, conv_id=conv_id, kind=client_pb2.CONV_KIND_DIRECT, peer_id=peer_id
    )


def _to_user(
    c: cluster_pb2.AccessCheck, conv_id: int, known: Mapping[int, object]
) -> cluster_pb2.AccessResult:
    """A 1:1 send: OK with the conversation of two friends; SELF_MESSAGE to oneself, NOT_FOUND
    to an account that does not exist, NOT_FRIEND to anyone else."""
    if c.user_id == c.to_user:
        return cluster_pb2.AccessResult(error=pb.SELF_MESSAGE)
    if conv_id:
        return _direct(conv_id, c.to_user)
    return cluster_pb2.AccessResult(error=pb.NOT_FRIEND if c.to_user in known else pb.NOT_FOUND)


def _group(group_id: int, user_id: int, members: Members) -> cluster_pb2.AccessResult:
    if members is None:
        return cluster_pb2.AccessResult(error=pb.NOT_FOUND)
    if user_id not in members:
        return cluster_pb2.AccessResult(error=pb.NOT_MEMBER)
    return cluster_pb2.AccessResult(
        error=pb.OK, conv_id=group_id, kind=client_pb2.CONV_KIND_GROUP, peer_id=group_id
    )
