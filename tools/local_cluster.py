"""A throwaway so-im cluster of real node processes on this machine (soimctl bench --spawn).

Role: `LocalCluster` starts `python -m nodes.<role>` processes with one environment, waits until
an observer's membership view shows them alive, and stops them (SIGTERM, then SIGKILL after a
deadline). `throwaway(env)` builds what such a cluster needs and removes it all on exit, also
after an error or Ctrl-C: a temp folder (fresh Curve keys, node logs), a unique cluster name, a
scratch database — an SQLite folder in the temp folder, or for a mysql:// SOIM_DB one
soim_bench_<random> database per listed server, dropped afterwards, so no real database is
touched — and, when SOIM_REDIS_URL is set, a Redis key prefix of its own whose keys are deleted.
Peer sockets: none of its own. The nodes bind ephemeral ports on 127.0.0.1 and announce
themselves with zeroconf on 127.0.0.1 only; the caller's `ClusterView` watches them.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote

import pymysql
import redis

from fabric import keys
from shard_store.backend import DbSpec, StoreUnavailable, parse_db_urls
from tools.cluster_view import ClusterView

ROOT = Path(__file__).resolve().parent.parent
PASSED_THROUGH = (
    "SOIM_DB",
    "SOIM_REDIS_URL",
    "SOIM_SHARDS",
    "SOIM_BATCH_ROWS",
    "SOIM_BATCH_MS",
    "SOIM_BATCH_LINGER_MS",
    "SOIM_MAX_FRAME_BYTES",
    "SOIM_TOKEN_TTL_S",
    "SOIM_LOG_LEVEL",
)
"""The caller's SOIM_* settings a throwaway cluster keeps. Everything else (ports, host, node
ids, SOIM_SCRYPT_N …) is left at the product's defaults or set here."""
LOAD_TEST_LIMITS = {
    "SOIM_MAX_UNAUTH_PER_ADDR": "100000",
    "SOIM_AUTH_PER_ADDR_PER_S": "100000",
    "SOIM_RESUME_PER_ADDR_PER_S": "100000",
    "SOIM_KDF_PER_ADDR": "100000",
    "SOIM_MAX_SESSIONS_PER_USER": "10000",
    "SOIM_AUTH_DEADLINE_S": "3600",
    "SOIM_TOKEN_AUDIT_S": "86400",
}
"""Per-address and per-user limits of a throwaway cluster: a benchmark's thousands of clients
all come from 127.0.0.1, share a few accounts, and open their connections before they log in
one password hash at a time, which the product's defaults (made for many users on many
addresses, each logging in as it connects) would refuse. The token audit is off because a
benchmark resumes many sessions along one account's token chain: each resume supersedes the
token of the session before it, which the audit would end."""
STOP_TIMEOUT_S = 10.0


class LocalNode:
    """One node process (run under `prefix`, e.g. `ip netns exec NS`); its output goes to
    `<log_dir>/<node id>.log`."""

    def __init__(
        self, role: str, env: Mapping[str, str], log_dir: Path, prefix: Sequence[str] = ()
    ) -> None:
        self.role = role
        self.node_id = env.get("SOIM_NODE_ID") or f"{role}-{uuid.uuid4().hex[:8]}"
        self.log_path = log_dir / f"{self.node_id}.log"
        full_env = {**env, "SOIM_NODE_ID": self.node_id, "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in wait())
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", f"nodes.{role}"],
            env=full_env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """Ask for a graceful stop (SIGTERM)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """kill -9."""
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Wait for the exit, killing it after `timeout` seconds; return the exit code."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._log.close()
        return code

    def log(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace")


class LocalCluster:
    """Node processes sharing one environment; `close()` stops every one of them."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.nodes: list[LocalNode] = []

    def start(self, role: str, count: int = 1, **env: str) -> list[LocalNode]:
        """Start `count` nodes of `role` (extra SOIM_* settings as keyword arguments)."""
        started = [LocalNode(role, {**self.env, **env}, self.log_dir) for _ in range(count)]
        self.nodes += started
        return started

    async def wait_alive(
        self, view: ClusterView, nodes: list[LocalNode], timeout: float = 30.0
    ) -> None:
        """Wait until `view` sees all of `nodes` alive; RuntimeError with their logs if not."""
        ids = {n.node_id for n in nodes}
        deadline = time.monotonic() + timeout
        while True:
            missing = ids - {p.node_id for p in view.membership.alive()}
            if not missing:
                return
            exited = [n for n in nodes if n.proc.poll() is not None]
            if exited or time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- {n.node_id}\n{n.log()[-2000:]}" for n in nodes if n.node_id in missing
                )
                raise RuntimeError(
                    f"nodes not alive after {timeout:.0f}s: {sorted(missing)}\n{tails}"
                )
            await asyncio.sleep(0.05)  # polling the view until the deadline

    def close(self) -> None:
        """SIGTERM every node, then wait (SIGKILL after STOP_TIMEOUT_S)."""
        for node in self.nodes:
            node.stop()
        for node in self.nodes:
            node.wait()


@contextmanager
def throwaway(env: Mapping[str, str]) -> Iterator[LocalCluster]:
    """A `LocalCluster` (no nodes yet) on scratch keys, database and Redis prefix of its own.

    `env` is the caller's environment: its SOIM_DB says which kind of database to use (default
    SQLite), its SOIM_REDIS_URL whether to use Redis. Everything made here is removed on exit.
    """
    run_id = uuid.uuid4().hex[:10]
    with ExitStack() as undo:
        folder = Path(tempfile.mkdtemp(prefix="soim-local-"))
        undo.callback(shutil.rmtree, folder, True)
        keys.generate(folder / "keys")
        node_env = {k: v for k, v in env.items() if not k.startswith("SOIM_")}
        node_env.update({k: env[k] for k in PASSED_THROUGH if env.get(k, "").strip()})
        node_env.update(
            SOIM_CLUSTER=f"bench-{run_id}",
            SOIM_KEYS_DIR=str(folder / "keys"),
            SOIM_HOST="127.0.0.1",
            SOIM_DISCOVERY_IFACES="127.0.0.1",
            SOIM_GATEWAY_PORT="0",
        )
        node_env.update(LOAD_TEST_LIMITS)
        node_env.setdefault("SOIM_LOG_LEVEL", "WARNING")
        given = env.get("SOIM_DB", "").strip()
        if given.startswith("mysql://"):
            node_env["SOIM_DB"] = undo.enter_context(_scratch_mysql(given, run_id))
        else:
            node_env["SOIM_DB"] = f"sqlite:{folder / 'data'}"
        if node_env.get("SOIM_REDIS_URL"):
            prefix = f"soim-bench:{run_id}:"
            node_env["SOIM_REDIS_PREFIX"] = prefix
            undo.callback(_forget_redis_keys, node_env["SOIM_REDIS_URL"], prefix)
        cluster = LocalCluster(node_env, folder)
        undo.callback(cluster.close)
        yield cluster


@contextmanager
def _scratch_mysql(urls: str, run_id: str) -> Iterator[str]:
    """A SOIM_DB with one fresh soim_bench_<run id>_<i> database per server of `urls`."""
    specs = parse_db_urls(urls)
    created: list[tuple[DbSpec, str]] = []
    try:
        for i, spec in enumerate(specs):
            name = f"soim_bench_{run_id}_{i}"
            with _admin(spec) as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            created.append((spec, name))
        yield ",".join(_url(spec, name) for spec, name in created)
    finally:
        for spec, name in created:
            with _admin(spec) as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@contextmanager
def _admin(spec: DbSpec) -> Iterator[pymysql.cursors.Cursor]:
    try:
        conn = pymysql.connect(
            host=spec.host,
            port=spec.port,
            user=spec.user,
            password=spec.password,
            autocommit=True,
            connect_timeout=5,
        )
    except pymysql.err.Error as err:
        raise StoreUnavailable(
            f"SOIM_DB: cannot reach {spec.display} to make a scratch database: {err.args[-1]}"
        ) from None
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def _url(spec: DbSpec, database: str) -> str:
    auth = quote(spec.user, safe="") + (
        f":{quote(spec.password, safe='')}" if spec.password else ""
    )
    return f"mysql://{auth}@{spec.host}:{spec.port}/{database}"


def _forget_redis_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
    except redis.RedisError as err:
        print(f"soimctl: Redis keys {prefix}* not deleted: {err}", file=sys.stderr)
    finally:
        client.close()
