"""Build helper: regenerate schema/*_pb2.py and *_pb2.pyi from schema/*.proto (`make proto`).

Role: run protoc (grpcio-tools) with the mypy-protobuf plugin; `generate(out_dir)` is also used
by the test that fails when the committed files are stale. No sockets.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schema"


def generate(out_dir: Path) -> list[Path]:
    """Compile every schema/*.proto into `out_dir`/schema; return the files written."""
    from grpc_tools import protoc

    plugin = shutil.which("protoc-gen-mypy") or str(Path(sys.executable).parent / "protoc-gen-mypy")
    protos = sorted(str(p.relative_to(ROOT)) for p in SCHEMA.glob("*.proto"))
    (out_dir / "schema").mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{ROOT}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    return sorted((out_dir / "schema").glob("*_pb2.py*"))


def main() -> int:
    written = generate(ROOT)
    for path in written:
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
