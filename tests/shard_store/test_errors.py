"""A malformed SOIM_DB or a database that is down gives one clear line naming SOIM_DB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shard_store import SettingError, Store, StoreUnavailable, parse_db_urls
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "value",
    [
        "postgres://u@h/db",
        "mysql://",
        "mysql://h:3306/db",
        "mysql://u@h:99999/db",
        "mysql://u@h:33a6/db",
        "mysql://u@h/bad-name",
        "mysql://u@h/",
        "mysql://u@h/db?ssl=1",
        "mysql://u@h/db,mysql://u@h:3306/db",
        "mysql://u@h/db,sqlite:x",
        "sqlite:",
        "sqlite:a,sqlite:b",
    ],
)
def test_malformed_soim_db_names_the_variable(value: str) -> None:
    with pytest.raises(SettingError) as err:
        Store.open(value)
    assert err.value.var == "SOIM_DB"
    assert str(err.value).startswith("SOIM_DB: ") and "\n" not in str(err.value)


def test_url_list_is_parsed() -> None:
    specs = parse_db_urls("mysql://so%40im:p%3Aw@db1:3307/soim,mysql://root@db2/soim")
    assert [(s.user, s.password, s.host, s.port, s.database) for s in specs] == [
        ("so@im", "p:w", "db1", 3307, "soim"),
        ("root", "", "db2", 3306, "soim"),
    ]
    assert specs[0].display == "mysql://so@im:***@db1:3307/soim"
    assert parse_db_urls("sqlite:var/data")[0].path == "var/data"


@pytest.mark.mysql
def test_database_down_is_one_line_without_the_password() -> None:
    url = f"mysql://root:secret@127.0.0.1:{free_port()}/soim"
    with pytest.raises(StoreUnavailable) as err:
        Store.open(url)
    text = str(err.value)
    assert text.startswith("SOIM_DB: cannot connect to mysql://root:***@127.0.0.1:")
    assert "\n" not in text and "secret" not in text


@pytest.mark.mysql
def test_missing_database_says_how_to_create_it() -> None:
    with pytest.raises(StoreUnavailable, match="CREATE DATABASE soim_nope_x"):
        Store.open("mysql://root@127.0.0.1:3306/soim_nope_x")


def test_unopenable_sqlite_folder_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailable) as err:
        Store.open(f"sqlite:{blocker}/data")
    assert str(err.value).startswith("SOIM_DB: cannot open ") and "\n" not in str(err.value)


@pytest.mark.parametrize("problem", ["down", "malformed"])
def test_soimctl_prints_one_line_not_a_traceback(problem: str) -> None:
    value = (
        f"mysql://root@127.0.0.1:{free_port()}/soim"
        if problem == "down"
        else "mysql://root@127.0.0.1:3306/bad-name"
    )
    env = {**os.environ, "SOIM_DB": value}
    proc = subprocess.run(
        [sys.executable, "-m", "tools.soimctl", "shards"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("soimctl: SOIM_DB: "), proc.stderr
    assert proc.stdout == ""
