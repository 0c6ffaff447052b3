"""`soimctl bench chat --logins`: password logins against raw scrypt at the same cost, token
resumes, presence lookups, and the gateway's memory per 1,000 idle sessions.

Role: the login mode of the chat benchmark.
Peer sockets: those of the client workers (tools.bench_clients), DEALERs to the routers' RPC
ROUTERs for Router.Lookup (cluster keys), a process pool for the raw KDF.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from fabric import timing
from fabric.config import Config
from fabric.ring import LiveRing
from nodes.directory import account_rows, passwords
from nodes.directory.context import KDF_THREADS
from schema import client_pb2, cluster_pb2
from schema.contracts.router import ROUTER
from shard_store.settings import StoreSettings
from shard_store.store import Store
from tools.bench_clients import (
    CLIENT_WORKERS,
    BenchError,
    ClientPool,
)
from tools.bench_target import PASSWORD, Target, rss_mb, step, wait_sessions
from tools.cluster_view import ClusterView

RESUME_WINDOW = 64
"""Resumes each worker keeps in flight."""
OPEN_WINDOW = 256
"""First pings each worker keeps in flight on new connections (a Curve handshake each)."""
KDF_SLICES = 8
"""Slices the logins and the raw hashes are cut into, alternating (even)."""
KDF_INFLIGHT = KDF_THREADS
"""Password logins in flight: one per scrypt thread of the directory. A login queued behind
another waits out the gateway's 5 s upstream deadline on a loaded machine; one in flight per
thread leaves the KDF idle only for a round trip between hashes."""
LOOKUP_BATCH = 100
LOOKUP_INFLIGHT = 16


def _kdf_slice(pool: ProcessPoolExecutor, count: int, n: int, r: int, p: int) -> float:
    """Seconds `count` raw hashlib.scrypt hashes at these parameters take on `pool`."""
    salts = [os.urandom(passwords.SALT_BYTES) for _ in range(count)]
    started = time.monotonic()
    list(
        pool.map(passwords.derive, [PASSWORD] * count, salts, [n] * count, [r] * count, [p] * count)
    )
    return time.monotonic() - started


async def _lookup_rate(
    view: ClusterView, user_ids: list[int], seconds: float
) -> tuple[float, float]:
    """(users looked up per second, Lookup calls per second): Router.Lookup batches of
    LOOKUP_BATCH ids at their owner routers, LOOKUP_INFLIGHT calls in flight, for `seconds`."""
    ring = LiveRing(view.membership, "router").current()
    batches = []
    for router, ids in ring.owners(user_ids).items():
        ids = list(itertools.islice(itertools.cycle(ids), LOOKUP_BATCH))
        batches.append((view.peers.get(router), cluster_pb2.UserIds(user_ids=ids)))
    turn = itertools.cycle(batches)
    calls = 0
    stop_at = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal calls
        while time.monotonic() < stop_at:
            client, request = next(turn)
            await client.call(ROUTER["Lookup"], request, timeout=timing.UPSTREAM_TIMEOUT_S)
            calls += 1

    started = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(LOOKUP_INFLIGHT)))
    elapsed = time.monotonic() - started
    return calls * LOOKUP_BATCH / elapsed, calls / elapsed


async def logins(target: Target, clients: int, sessions: int, lookup_s: float) -> dict[str, Any]:
    """Password logins against the KDF ceiling, token resumes, lookups and idle sessions."""
    gateways = target.gateways()
    run_id = uuid.uuid4().hex[:8]
    accounts = [f"b{run_id}{i}" for i in range(clients)]
    spread = [(ep, key) for _, ep, key in itertools.islice(itertools.cycle(gateways), clients)]
    pool = ClientPool(1)  # logins cost the client nothing next to scrypt
    session_pool = ClientPool(CLIENT_WORKERS)
    try:
        await asyncio.to_thread(pool.open, spread)
        took, _ = await step(
            pool,
            "Register",
            [
                client_pb2.RegisterRequest(
                    account=a, password=PASSWORD, device="bench"
                ).SerializeToString()
                for a in accounts
            ],
            KDF_INFLIGHT,
        )
        registers_per_s = clients / took
        await step(pool, "Logout", [client_pb2.LogoutRequest().SerializeToString()] * clients)
        n, r, p = await asyncio.to_thread(_scrypt_params, target.cfg, accounts[0])
        logins_per_s, kdf_per_s, users = await _logins_and_kdf(pool, accounts, n, r, p)
        lookups_per_s, lookup_calls_per_s = await _lookup_rate(
            target.view, [u.user_id for u in users], lookup_s
        )

        gw_id, gw_endpoint, gw_key = gateways[0]
        pid = target.pid(gw_id, gw_endpoint)
        rss_before = rss_mb(pid)
        await asyncio.to_thread(session_pool.open, [(gw_endpoint, gw_key)] * sessions, OPEN_WINDOW)
        meter = target.cpu_meter(session_pool)
        meter.start()
        took = await _resume_all(session_pool, [u.token for u in users], sessions)
        resume_cores = meter.stop()
        resumes_per_s = sessions / took
        # at least the resumed ones: the login pool's sessions may have idled out meanwhile
        await wait_sessions(target.view, gw_id, sessions)
        rss_after = rss_mb(pid)
        await step(
            session_pool,
            "Logout",
            [client_pb2.LogoutRequest().SerializeToString()] * sessions,
            RESUME_WINDOW,
        )
    finally:
        await asyncio.to_thread(session_pool.close)
        await asyncio.to_thread(pool.close)
    return {
        "logins_per_s": round(logins_per_s, 2),
        "kdf_per_s": round(kdf_per_s, 2),
        "login_ratio": round(logins_per_s / kdf_per_s, 3),
        "registers_per_s": round(registers_per_s, 2),
        "resumes_per_s": round(resumes_per_s),
        "lookups_per_s": round(lookups_per_s),
        "lookup_calls_per_s": round(lookup_calls_per_s),
        "resume_cpu_cores": resume_cores,
        "lookup": f"Router.Lookup batches of {LOOKUP_BATCH} user ids at the owner router, "
        f"{LOOKUP_INFLIGHT} in flight, {lookup_s:g} s",
        "gateway_rss_mb_before": round(rss_before, 1),
        "gateway_rss_mb_after": round(rss_after, 1),
        "gateway_rss_mb_per_1000": round((rss_after - rss_before) * 1000 / sessions, 1),
        "scrypt": {
            "n": n,
            "r": r,
            "p": p,
            "maxmem_mb": passwords.maxmem(n, r, p) >> 20,
            "kdf_processes": KDF_THREADS,
        },
        "clients": clients,
        "sessions": sessions,
        "load": f"{clients} accounts registering and logging in ({KDF_INFLIGHT} in flight, "
        f"for {KDF_THREADS} scrypt threads), then {sessions} connections resuming "
        f"({RESUME_WINDOW} in flight per worker, in rounds of one per account: each "
        f"resume rotates its token) on one gateway: raw client-plane "
        f"DEALERs (Curve) driven from {CLIENT_WORKERS} worker processes",
    }


async def _resume_all(pool: ClientPool, tokens: list[str], sessions: int) -> float:
    """Resume `sessions` connections with the accounts' tokens; seconds it took. A token works
    once (each resume rotates it), so the connections resume in rounds of one per account, each
    round with the tokens the previous one returned."""
    took = 0.0
    for first in range(0, sessions, len(tokens)):
        batch = range(first, min(first + len(tokens), sessions))
        payloads: list[bytes | None] = [
            client_pb2.ResumeRequest(
                token=tokens[i % len(tokens)], device=f"s{i}"
            ).SerializeToString()
            if i in batch
            else None
            for i in range(sessions)
        ]
        spent, replies = await step(pool, "Resume", payloads, RESUME_WINDOW)
        took += spent
        for i, reply in zip(batch, replies, strict=True):
            tokens[i % len(tokens)] = reply.token
    return took


async def _logins_and_kdf(
    pool: ClientPool, accounts: list[str], n: int, r: int, p: int
) -> tuple[float, float, list[client_pb2.LoginReply]]:
    """(logins/s, raw scrypt hashes/s, the login replies): one login per account through the
    cluster (KDF_INFLIGHT in flight), and as many hashes on a pool of KDF_THREADS processes as
    wide as the directory's scrypt pool (scrypt releases the GIL there), in alternating slices
    — kdf, logins, logins, kdf, … — so both see the same background load."""
    slices = KDF_SLICES if len(accounts) >= KDF_SLICES else 2
    parts = [
        range(len(accounts) * k // slices, len(accounts) * (k + 1) // slices) for k in range(slices)
    ]
    users: list[client_pb2.LoginReply] = []
    login_s = kdf_s = 0.0

    async def log_in(part: range) -> float:
        took, replies = await step(
            pool,
            "Login",
            [
                client_pb2.LoginRequest(
                    account=accounts[i], password=PASSWORD, device="bench"
                ).SerializeToString()
                if i in part
                else None
                for i in range(len(accounts))
            ],
            KDF_INFLIGHT,
        )
        users.extend(replies)
        return took

    with ProcessPoolExecutor(KDF_THREADS, mp_context=mp.get_context("spawn")) as kdf_pool:
        await asyncio.to_thread(_kdf_slice, kdf_pool, KDF_THREADS, 1024, 8, 1)  # start, warm
        for first, second in zip(parts[::2], parts[1::2], strict=True):
            kdf_s += await asyncio.to_thread(_kdf_slice, kdf_pool, len(first), n, r, p)
            login_s += await log_in(first) + await log_in(second)
            kdf_s += await asyncio.to_thread(_kdf_slice, kdf_pool, len(second), n, r, p)
    return len(accounts) / login_s, len(accounts) / kdf_s, users


def _scrypt_params(cfg: Config, account: str) -> tuple[int, int, int]:
    """N, r, p of `account`'s stored password hash: what the directory really used."""
    with Store.from_settings(StoreSettings.from_env(cfg.extra), pool_size=1) as store:
        creds = account_rows.credentials(store, account)
    if creds is None:
        raise BenchError(f"account {account} is not in SOIM_DB; is it the cluster's database?")
    _, n, r, p, _, _ = creds.pw_hash.split("$")
    return int(n), int(r), int(p)
