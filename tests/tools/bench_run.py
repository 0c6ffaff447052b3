"""Test support for the benchmark commands: run `soimctl bench …` as a user would, read its JSON.

`run_bench` runs it as a subprocess from the repository root, with none of the caller's SOIM_*
settings (a benchmark's throwaway cluster picks its own) and TMPDIR in the test's folder, so a
test can check that the command left nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent


def run_bench(tmp_path: Path, *args: str, **settings: str) -> dict[str, Any]:
    """`soimctl bench ARGS` with these SOIM_* `settings` only; its JSON. Fails the test on a
    non-zero exit, with the command's stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOIM_")}
    env.update(settings, TMPDIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "tools.soimctl", "bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result
