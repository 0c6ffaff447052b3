"""`soimctl export DIR` / `soimctl import DIR`: the cluster's data as JSON lines files.

Role: two admin commands over `shard_store.dump`, on the store of SOIM_DB directly (no node
needs to run). An export is a folder: `manifest.json` (format, schema version, source backend,
row counts) and one `<table>.jsonl` per kind — account (with password hashes), user
(nicknames, disabled), friend (both directions, conv id, state), group, group_name,
group_member, user_group, group_rule, group_pass, conversation (last_seq), cursor, message —
plus id_segment; one JSON object per row, in primary-key order, so two exports of the same
data are the same bytes whatever the backend or shard layout. Session tokens are not exported:
users log in again. Import loads a folder into a store that holds no data (it refuses
otherwise), 1,000 rows per transaction, then sets the id allocator past every imported id.
With --json each command prints one JSON object, errors included. Connections: a Store opened
from the environment and closed here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shard_store.backend import StoreError
from shard_store.dump import DATA_TABLES, columns, holdings, load, rows, segments, set_segments
from shard_store.schema import ID_SEGMENT, LATEST, TABLES
from shard_store.settings import StoreSettings
from shard_store.store import Store
from tools.cmd_errors import failed

FORMAT = 1
MANIFEST = "manifest.json"


class ExportError(Exception):
    """A folder that cannot be written or read as an export; `code` names the case."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def export(store: Store, folder: Path) -> dict[str, Any]:
    """Write every data table and id_segment of `store` to `folder`; return the manifest."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ExportError("DIR_NOT_EMPTY", f"{folder} exists and is not an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name in DATA_TABLES:
        counts[name] = _write(folder / f"{name}.jsonl", columns(TABLES[name]), rows(store, name))
    counts[ID_SEGMENT.name] = _write(
        folder / f"{ID_SEGMENT.name}.jsonl", columns(ID_SEGMENT), iter(segments(store))
    )
    manifest = {
        "format": FORMAT,
        "schema_version": LATEST,
        "source": store.kind,
        "exported_ms": int(time.time() * 1000),
        "tables": counts,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _write(path: Path, names: list[str], records: Iterator[tuple[Any, ...]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(dict(zip(names, record, strict=True))) + "\n")
            count += 1
    return count


def import_(store: Store, folder: Path) -> dict[str, Any]:
    """Load the export in `folder` into `store`, which must hold no data; return the counts."""
    manifest = _manifest(folder)
    held = holdings(store)
    if held:
        raise ExportError(
            "NOT_EMPTY",
            f"the store of SOIM_DB already holds data ({', '.join(held)}"
            "); import only into an empty store, before nodes write to it",
        )
    for name in (*DATA_TABLES, ID_SEGMENT.name):  # a bad line stops it before any row is loaded
        for _ in _read(folder, name):
            pass
    counts = {name: load(store, name, _read(folder, name)) for name in DATA_TABLES}
    ids = set_segments(store, _read(folder, ID_SEGMENT.name), int(time.time() * 1000))
    return {
        "source": manifest["source"],
        "target": store.kind,
        "tables": counts,
        "id_segment": {str(r[0]): int(r[1]) for r in ids},
    }


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ExportError("BAD_EXPORT", f"{folder / MANIFEST}: {err}") from None
    if manifest.get("format") != FORMAT or manifest.get("schema_version") != LATEST:
        raise ExportError(
            "BAD_EXPORT",
            f"{folder} holds format {manifest.get('format')}, schema "
            f"v{manifest.get('schema_version')}; this so-im reads format {FORMAT}, "
            f"schema v{LATEST}",
        )
    return manifest


def _read(folder: Path, name: str) -> Iterator[list[Any]]:
    """The rows of `<name>.jsonl` as lists in column order; BAD_EXPORT names a bad line."""
    names = columns(ID_SEGMENT if name == ID_SEGMENT.name else TABLES[name])
    path = folder / f"{name}.jsonl"
    try:
        with path.open(encoding="utf-8") as lines:
            for n, line in enumerate(lines, 1):
                try:
                    record = json.loads(line)
                    if sorted(record) != sorted(names):
                        raise ValueError(f"columns {sorted(record)}, expected {sorted(names)}")
                except ValueError as err:
                    raise ExportError("BAD_EXPORT", f"{path}:{n}: {err}") from None
                yield [record[c] for c in names]
    except OSError as err:
        raise ExportError("BAD_EXPORT", str(err)) from None


def run(args: dict[str, Any]) -> int:
    """Entry point from soimctl (`export DIR` or `import DIR`)."""
    as_json = bool(args.get("--json"))
    folder = Path(args["DIR"])
    try:
        with Store.from_settings(StoreSettings.from_env()) as store:
            result = export(store, folder) if args.get("export") else import_(store, folder)
    except ExportError as err:
        return failed(err.code, str(err), as_json)
    except StoreError as err:
        return failed("STORE", str(err), as_json)
    if as_json:
        print(json.dumps(result))
        return 0
    if args.get("export"):
        print(f"exported {result['source']} store to {folder}:")
    else:
        print(f"imported {folder} (from {result['source']}) into the {result['target']} store:")
    for name, count in result["tables"].items():
        print(f"  {name:<14} {count:>10}")
    if args.get("import"):
        print(
            "id counters continue after "
            + ", ".join(f"{tag} {top}" for tag, top in result["id_segment"].items())
        )
        print("sessions were not exported: users log in again")
    return 0
