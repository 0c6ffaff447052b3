"""The layers' import rules, read from the source: no role imports another role, the client
imports no node, the fabric and the schema know no role, store, client or tool, and the store
knows no role, client or fabric.

Role: parse every module under fabric/, nodes/, schema/contracts/, shard_store/, tui/ and tools/
with `ast` (imports inside functions and `if TYPE_CHECKING:` blocks count too) and list each
import that crosses a forbidden line. What roles share goes into `schema.contracts`; what every
node needs, into `fabric`. tools/ may import anything. No sockets.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("fabric", "nodes", "schema/contracts", "shard_store", "tui", "tools")
FORBIDDEN = {
    "fabric": ("nodes", "tui", "shard_store", "tools"),
    "schema": ("nodes", "tui", "shard_store", "tools"),
    "shard_store": ("nodes", "tui", "tools", "fabric"),
    "tui": ("nodes", "tools"),
    "nodes": ("tui", "tools"),
}
"""Top-level package -> the packages its modules may not import."""


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every import in the module at `path`."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            prefix = ".".join([*base, node.module] if node.module else base)
            for alias in node.names:
                yield node.lineno, f"{prefix}.{alias.name}" if alias.name != "*" else prefix


def violation(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported`, or None."""
    top, target = importer.split(".")[0], imported.split(".")
    for banned in FORBIDDEN.get(top, ()):
        if target[0] == banned:
            return f"{top} imports {banned}"
    here = importer.split(".")
    crosses = target[0] == "nodes" and len(target) > 1 and target[1] != here[1]
    if top == "nodes" and len(here) > 2 and crosses:
        return f"role {here[1]} imports role {target[1]}"
    return None


def modules() -> list[Path]:
    found = [p for d in CHECKED for p in sorted((ROOT / d).rglob("*.py"))]
    return [p for p in found if "__pycache__" not in p.parts]


def test_every_layer_keeps_its_imports() -> None:
    crossings = [
        f"{path.relative_to(ROOT)}:{line}: {why} ({name})"
        for path in modules()
        for line, name in imports(path)
        if (why := violation(module_name(path), name))
    ]
    assert not crossings, "imports across a layer's line:\n" + "\n".join(crossings)


def test_the_rules_catch_what_they_name() -> None:
    assert violation("nodes.gateway.upstream", "nodes.router.api.ROUTER") == (
        "role gateway imports role router"
    )
    assert violation("nodes.gateway.node", "nodes.gateway.access.AccessCache") is None
    assert violation("nodes.cli", "nodes.gateway.node") is None
    assert violation("tui.link", "nodes.gateway.api") == "tui imports nodes"
    assert violation("fabric.readiness", "shard_store.store.Store") == "fabric imports shard_store"
    assert violation("shard_store.store", "nodes.storage") == "shard_store imports nodes"
    assert violation("shard_store.store", "fabric.config.Config") == "shard_store imports fabric"
    assert violation("tools.bench_chat", "nodes.gateway.options") is None
    assert violation("nodes.storage.fanout", "schema.contracts.router.ROUTER") is None


def test_relative_and_nested_imports_are_seen(tmp_path: Path) -> None:
    module = tmp_path / "nodes" / "gateway" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from . import sessions\nfrom ..router import presence\ndef f():\n    import tui.link\n"
    )
    names = {name for _, name in imports(module, tmp_path)}
    assert names == {"nodes.gateway.sessions", "nodes.router.presence", "tui.link"}
    assert [violation("nodes.gateway.x", n) is None for n in sorted(names)] == [True, False, False]
