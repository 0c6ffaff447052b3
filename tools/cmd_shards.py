"""`soimctl shards [--json]`: the schema version of each database of SOIM_DB and the row count
of every shard table.

Role: one admin command, read-only apart from bringing the schema up to date as any node start
would. Connections: a Store opened from the environment (SOIM_DB, SOIM_SHARDS) and closed here.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any

from shard_store.backend import StoreError
from shard_store.schema import LATEST, TABLES
from shard_store.settings import StoreSettings
from shard_store.store import Store


def collect(settings: StoreSettings) -> dict[str, Any]:
    """Versions and counts as plain data (what --json prints)."""
    with Store.from_settings(settings) as store:
        versions = store.schema_versions()
        counts = store.row_counts()
        databases = []
        for db, version in zip(store.databases, versions, strict=True):
            tables = [
                {"logical": c.logical, "table": c.table, "rows": c.rows}
                for c in counts
                if c.db == db.spec.display
            ]
            databases.append(
                {
                    "db": db.spec.display,
                    "index": db.index,
                    "kind": db.kind,
                    "schema_version": version,
                    "tables": tables,
                }
            )
    return {"schema_latest": LATEST, "tables_per_db": settings.shards, "databases": databases}


def render(data: dict[str, Any]) -> str:
    """The human table: one block per database, one line per logical table."""
    n = data["tables_per_db"]
    lines = []
    for db in data["databases"]:
        lines.append(
            f"{db['db']}  (database {db['index']}, schema v{db['schema_version']} of "
            f"v{data['schema_latest']}, {n} tables per logical table)"
        )
        per: defaultdict[str, list[int]] = defaultdict(list)
        for t in db["tables"]:
            per[t["logical"]].append(t["rows"])
        width = max(len(name) for name in TABLES)
        head = "".join(f"{'_' + str(i):>9}" for i in range(n))
        lines.append(f"  {'table':<{width}} {'rows':>10}{head}")
        for logical, rows in per.items():
            cells = "".join(f"{r:>9}" for r in rows)
            lines.append(f"  {logical:<{width}} {sum(rows):>10}{cells}")
    return "\n".join(lines)


def run(args: dict[str, Any]) -> int:
    """Entry point from soimctl."""
    try:
        data = collect(StoreSettings.from_env())
    except StoreError as err:
        print(f"soimctl: {err}", file=sys.stderr)
        return 2
    print(json.dumps(data) if args.get("--json") else render(data))
    return 0
