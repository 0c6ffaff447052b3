""".env is read the same way by soimctl, soim and the nodes (the real environment wins over it);
soimctl survives a closed pipe; keep_running starts a command again after it exits and stops
at once on SIGTERM. Real processes; no cluster is needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import ROOT
from tests.support import wait_until


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without SOIM_* settings (they would win over any .env file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOIM_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _run(cwd: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_soimctl_reads_dot_env_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"SOIM_DB=sqlite:{tmp_path / 'from-dotenv'}\nSOIM_SHARDS=2\n")
    shards = _run(tmp_path, _env(), "-m", "tools.soimctl", "shards", "--json")
    assert shards.returncode == 0, shards.stderr
    data = json.loads(shards.stdout)
    assert [d["db"] for d in data["databases"]] == [f"sqlite:{tmp_path / 'from-dotenv'}"]
    assert data["tables_per_db"] == 2

    real = f"sqlite:{tmp_path / 'from-environment'}"  # the real environment wins
    shards = _run(tmp_path, _env(SOIM_DB=real), "-m", "tools.soimctl", "shards", "--json")
    data = json.loads(shards.stdout)
    assert ([d["db"] for d in data["databases"]], data["tables_per_db"]) == ([real], 2)

    other = tmp_path / "elsewhere.env"  # SOIM_ENV_FILE names the file instead of ./.env
    other.write_text(f"SOIM_DB=sqlite:{tmp_path / 'named'}\n")
    shards = _run(ROOT, _env(SOIM_ENV_FILE=str(other)), "-m", "tools.soimctl", "shards", "--json")
    assert json.loads(shards.stdout)["databases"][0]["db"] == f"sqlite:{tmp_path / 'named'}"

    missing = _run(
        tmp_path, _env(SOIM_ENV_FILE=str(tmp_path / "nope.env")), "-m", "tools.soimctl", "shards"
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("soimctl: SOIM_ENV_FILE: cannot read"), missing.stderr


SHARDS_3 = ("SOIM_SHARDS=3", "SOIM_SHARDS: must be a power of two, got 3")


@pytest.mark.parametrize(
    ("argv", "setting"),
    [
        (["-m", "tools.soimctl", "shards"], SHARDS_3),
        (
            ["-m", "tui.main", "--plain"],
            ("SOIM_DISCOVERY=pigeon", "SOIM_DISCOVERY: must be mdns, seeds or both"),
        ),
        (["-m", "nodes.directory"], SHARDS_3),
    ],
    ids=["soimctl", "soim", "node"],
)
def test_every_entry_point_reads_the_same_file(
    tmp_path: Path, argv: list[str], setting: tuple[str, str]
) -> None:
    """A bad value in .env of a setting it reads stops each of them with one line naming the
    variable (soim reads no store setting)."""
    line, problem = setting
    (tmp_path / ".env").write_text(line + "\n")
    out = _run(tmp_path, _env(), *argv)
    assert out.returncode == 2, out.stderr
    assert problem in out.stderr


def test_soimctl_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`soimctl shards | head -2`: the reader has gone before soimctl writes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.soimctl", "shards"],
        cwd=ROOT,
        env=_env(SOIM_DB=f"sqlite:{tmp_path / 'db'}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.timeout(30)
def test_keep_running_restarts_with_backoff_and_stops_on_sigterm(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    log = open(tmp_path / "keep_running.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.keep_running", "sh", "-c", f"echo run >> {runs}; exit 3"],
        cwd=ROOT,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        started = time.monotonic()
        wait_until(
            lambda: runs.exists() and len(runs.read_text().split()) >= 3,
            timeout=10,
            what="a third start",
        )
        elapsed = time.monotonic() - started
        assert 1 + 2 <= elapsed < 1 + 2 + 2, elapsed  # waited 1 s, then 2 s
        proc.send_signal(signal.SIGTERM)  # in its 4 s backoff now
        stopped = time.monotonic()
        assert proc.wait(5) == 0
        assert time.monotonic() - stopped < 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()
    text = (tmp_path / "keep_running.log").read_text()
    assert "exited with 3" in text and "starting it again in 2 s" in text, text
