"""`soimctl history purge --before DATE [--conv ID] [--json]`: message retention.

Role: one admin command over `shard_store.purge`, on the store of SOIM_DB directly (like
`soimctl shards`; no node needs to run). Deletes messages stamped before DATE (YYYY-MM-DD or an
ISO timestamp; UTC unless it names its offset), at most 1,000 rows per transaction, printing a
line per committed batch and the total (JSON lines with --json; errors are JSON too).
Connections: a Store opened from the environment and closed here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from shard_store.backend import StoreError
from shard_store.purge import purge
from shard_store.settings import StoreSettings
from shard_store.store import Store
from tools.cmd_errors import failed


class BadArgument(ValueError):
    """A --before or --conv value that cannot be used; str() says why."""


def cutoff_ms(text: str) -> int:
    """Epoch milliseconds of DATE: `YYYY-MM-DD` (midnight) or an ISO timestamp, UTC by default."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadArgument(f"--before wants YYYY-MM-DD or an ISO timestamp, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _conv(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise BadArgument(f"--conv wants a conversation id (a positive number), got {text!r}")
    return int(text)


def run(args: dict[str, Any]) -> int:
    """Entry point from soimctl; exit 0, or 2 with one line on stderr (or a JSON object)."""
    as_json = bool(args.get("--json"))
    try:
        before = cutoff_ms(args["--before"])
        conv = _conv(args.get("--conv"))
    except BadArgument as err:
        return failed("BAD_ARGUMENT", str(err), as_json)
    total = 0
    try:
        with Store.from_settings(StoreSettings.from_env()) as store:
            for step in purge(store, before, conv):
                total = step.total
                if as_json:
                    print(
                        json.dumps(
                            {
                                "db": step.db,
                                "table": step.table,
                                "deleted": step.deleted,
                                "total": step.total,
                            }
                        ),
                        flush=True,
                    )
                else:
                    print(
                        f"{step.table} ({step.db}): {step.deleted} deleted, {step.total} so far",
                        flush=True,
                    )
    except StoreError as err:
        return failed("STORE", str(err), as_json)
    stamp = datetime.fromtimestamp(before / 1000, UTC).isoformat()
    if as_json:
        print(json.dumps({"deleted": total, "before": stamp, "before_ms": before, "conv": conv}))
    else:
        scope = f" of conversation {conv}" if conv is not None else ""
        print(f"deleted {total} messages{scope} older than {stamp}")
    return 0
