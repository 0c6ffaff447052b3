"""`soimctl bench store`: how fast the batch writer makes message rows durable, against a raw
multi-row INSERT ceiling measured in the same run on the same tables.

Role: one benchmark command. It writes `--rows` message rows (100-byte bodies) twice per
round: raw (the writer's INSERT IGNORE statements run back to back on one connection, one
transaction per `SOIM_BATCH_ROWS` rows) and through `BatchWriter` fed by many submitter threads,
each keeping a window of rows in flight as a storage node would. Best of three rounds each.
Connections: a Store on a scratch database (SQLite in a temp folder; MySQL from SOIM_DB if it is
a mysql:// URL with empty message tables, else a soim_bench_<random> database it creates on
root@127.0.0.1:3306 and drops).
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import string
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import pymysql

from shard_store.backend import Statement, StoreError, StoreUnavailable
from shard_store.batch_writer import BatchWriter
from shard_store.schema import MESSAGE, MESSAGE_KINDS, MessageRow
from shard_store.settings import StoreSettings
from shard_store.store import Store

ROUNDS = 3
SUBMITTERS = 8
WINDOW = 1024
"""Rows each submitter keeps in flight (it waits for its oldest ack beyond that)."""
CONVERSATIONS = 2000
BODY_BYTES = 100
ACK_TIMEOUT_S = 60.0
SCRATCH_SERVER = dict(host="127.0.0.1", port=3306, user="root", password="")


def make_rows(n: int, seed: int = 7) -> list[MessageRow]:
    """`n` message rows over CONVERSATIONS conversations, seqs from 1, 100-byte bodies."""
    rnd = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + " .,!?'"
    bodies = ["".join(rnd.choices(alphabet, k=BODY_BYTES)) for _ in range(997)]
    seqs = [0] * CONVERSATIONS
    now = int(time.time() * 1000)
    rows = []
    for i in range(n):
        conv = rnd.randrange(CONVERSATIONS)
        seqs[conv] += 1
        rows.append(
            MessageRow(
                conv + 1,
                seqs[conv],
                i + 1,
                1000 + conv % 97,
                f"b{i:x}",
                now + i // 1000,
                bodies[i % len(bodies)],
            )
        )
    return rows


def _clear(store: Store) -> None:
    for db in store.databases:
        with db.connection() as conn:
            for shard in store.shard_map.shards(db.index):
                table = shard.table(MESSAGE.name)
                conn.execute(
                    f"TRUNCATE TABLE `{table}`" if db.kind == "mysql" else f"DELETE FROM `{table}`"
                )


def _count(store: Store) -> int:
    return sum(c.rows for c in store.row_counts() if c.logical == MESSAGE.name)


def ceiling(store: Store, rows: list[MessageRow], batch_rows: int) -> float:
    """Rows/s of the raw statements: per batch_rows rows one transaction per database, one
    INSERT per table, sent the writer's way (one round trip on MySQL), back to back."""
    started = time.perf_counter()
    conns = [db.connection(batch=True) for db in store.databases]
    try:
        for i in range(0, len(rows), batch_rows):
            groups: dict[tuple[int, int], list[MessageRow]] = {}
            for row in rows[i : i + batch_rows]:
                shard = store.shard_map.shard_of(row.conv_id)
                groups.setdefault((shard.db, shard.table_no), []).append(row)
            per_db: list[list[Statement]] = [[] for _ in conns]
            for (db, table_no), part in sorted(groups.items()):
                per_db[db] += store.databases[db].insert_statements(
                    f"{MESSAGE.name}_{table_no}", MessageRow._fields, MESSAGE_KINDS, part
                )
            for conn, statements in zip(conns, per_db, strict=True):
                if statements:
                    conn.write_batch(statements)
    finally:
        for conn in conns:
            conn.close()
    return len(rows) / (time.perf_counter() - started)


def through_writer(
    store: Store, rows: list[MessageRow], settings: StoreSettings
) -> tuple[float, float]:
    """Rows/s through BatchWriter with SUBMITTERS threads; also the mean rows per flush."""
    writer = BatchWriter.from_settings(store, settings)
    parts = [[r for r in rows if r.conv_id % SUBMITTERS == k] for k in range(SUBMITTERS)]
    errors: list[BaseException] = []

    def submit(part: list[MessageRow]) -> None:
        window: deque[Future[MessageRow]] = deque()
        try:
            for row in part:
                window.append(writer.submit(row))
                if len(window) > WINDOW:
                    window.popleft().result(ACK_TIMEOUT_S)
            for fut in window:
                fut.result(ACK_TIMEOUT_S)
        except BaseException as err:  # reported after the run
            errors.append(err)

    threads = [
        threading.Thread(target=submit, args=(p,), name=f"bench-submit-{k}")
        for k, p in enumerate(parts)
    ]
    started = time.perf_counter()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(ACK_TIMEOUT_S * 4)
        elapsed = time.perf_counter() - started
    finally:
        writer.close()
    if errors:
        raise StoreError(f"writer run failed: {errors[0]}")
    stats = writer.stats()
    return len(rows) / elapsed, stats.rows / max(stats.flushes, 1)


@contextmanager
def _target(backend: str, env: dict[str, str]) -> Iterator[str]:
    """A SOIM_DB URL to measure on, cleaned up afterwards."""
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="soim-bench-")
        try:
            yield f"sqlite:{folder}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    given = env.get("SOIM_DB", "")
    if given.startswith("mysql://"):
        yield given
        return
    name = f"soim_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = pymysql.connect(**SCRATCH_SERVER, autocommit=True)  # type: ignore[arg-type]
    except pymysql.err.Error as err:
        raise StoreUnavailable(
            f"SOIM_DB: not a mysql:// URL, and no MariaDB on root@127.0.0.1:"
            f"3306 for a scratch database: {err.args[-1]}"
        ) from None
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def measure(backend: str, n: int, env: dict[str, str]) -> dict[str, Any]:
    """Run the benchmark; return its figures."""
    settings = StoreSettings.from_env(env)
    rows = make_rows(n)
    with _target(backend, env) as url, Store.open(url, settings.shards) as store:
        if _count(store):
            raise StoreError(
                "SOIM_DB's message tables are not empty; bench store needs a "
                "scratch database (unset SOIM_DB to let it create one)"
            )
        rounds = []
        try:
            for _ in range(ROUNDS):
                _clear(store)
                raw = ceiling(store, rows, settings.batch_rows)
                _clear(store)
                rate, mean_batch = through_writer(store, rows, settings)
                stored = _count(store)
                if stored != n:
                    raise StoreError(f"writer stored {stored} of {n} rows")
                rounds.append(
                    {
                        "ceiling_rows_per_s": round(raw),
                        "rows_per_s": round(rate),
                        "mean_flush_rows": round(mean_batch, 1),
                    }
                )
        finally:
            _clear(store)
        version = store.home.server_version()
    best = max(r["rows_per_s"] for r in rounds)
    top = max(r["ceiling_rows_per_s"] for r in rounds)
    return {
        "backend": backend,
        "server": version,
        "rows": n,
        "body_bytes": BODY_BYTES,
        "shards": settings.shards,
        "databases": len(store.databases),
        "batch_rows": settings.batch_rows,
        "batch_ms": settings.batch_ms,
        "submitters": SUBMITTERS,
        "window": WINDOW,
        "rows_per_s": best,
        "ceiling_rows_per_s": top,
        "ratio": round(best / top, 3),
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def run(args: dict[str, Any]) -> int:
    """Entry point from soimctl: `bench store [--json] [--backend B] [--rows N]`."""
    backend = str(args.get("--backend") or "sqlite")
    if backend not in ("mysql", "sqlite"):
        print(f"soimctl: --backend must be mysql or sqlite, got {backend!r}", file=sys.stderr)
        return 2
    try:
        n = int(args.get("--rows") or 200_000)
    except ValueError:
        n = 0
    if n < 1:
        print(
            f"soimctl: --rows must be a positive integer, got {args.get('--rows')!r}",
            file=sys.stderr,
        )
        return 2
    try:
        result = measure(backend, n, dict(os.environ))
    except StoreError as err:
        print(f"soimctl: {err}", file=sys.stderr)
        return 2
    if args.get("--json"):
        print(json.dumps(result))
    else:
        print(
            f"{backend} ({result['server']}): batch writer {result['rows_per_s']} rows/s, "
            f"raw INSERT ceiling {result['ceiling_rows_per_s']} rows/s, "
            f"ratio {result['ratio']} (best of {ROUNDS} rounds of {n} rows)"
        )
    return 0
