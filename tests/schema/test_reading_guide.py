"""Reading guide tests: every name and file docs/reading-guide.md points at exists.

Role: import each dotted name the guide shows in backticks (`module.Class.method`,
`module.function`) and walk its attributes, check that every repository path it shows in
backticks and every relative link resolves to a file, and that README.md links the guide.
So a renamed function or a moved module fails here until the guide follows. No sockets.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "reading-guide.md"
PACKAGES = ("fabric", "nodes", "shard_store", "tui", "tools", "schema")
DOTTED = re.compile(rf"`((?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+)`")
REPO_PATH = re.compile(r"`([\w.-]+(?:/[\w.-]+)+\.(?:py|md|proto))`")
LINK = re.compile(r"\]\(([^)#]+)(?:#[^)]*)?\)")
MIN_PATH_NAMES = 60
"""The send path alone names more than this: a guide that lists fewer has lost its path."""


def _resolve(dotted: str) -> object:
    """The object `dotted` names: its longest importable prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: ModuleType | object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as err:
            if err.name is None or not ".".join(parts[:cut]).startswith(err.name):
                raise  # the module exists but imports something missing: a real failure
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_dotted_name_resolves() -> None:
    names = DOTTED.findall(GUIDE.read_text(encoding="utf-8"))
    assert len(names) >= MIN_PATH_NAMES, f"only {len(names)} dotted names in the guide"
    missing = []
    for name in dict.fromkeys(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as err:
            missing.append(f"{name} ({type(err).__name__}: {err})")
    assert not missing, "docs/reading-guide.md names what does not exist: " + "; ".join(missing)


def test_every_path_and_link_exists() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    paths = [ROOT / p for p in REPO_PATH.findall(text)]
    links = [GUIDE.parent / link for link in LINK.findall(text) if "://" not in link]
    assert paths and links
    missing = [
        str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)
        for p in paths + links
        if not p.resolve().is_file()
    ]
    assert not missing, "docs/reading-guide.md points at missing files: " + ", ".join(missing)


def test_readme_links_the_guide() -> None:
    assert "docs/reading-guide.md" in (ROOT / "README.md").read_text(encoding="utf-8")
