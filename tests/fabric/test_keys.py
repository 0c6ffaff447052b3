"""Curve key files: generate, load, keep with --if-missing, the KeysMissing message, soimctl."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq

from fabric import keys
from fabric.config import ConfigError
from tools.soimctl import main as soimctl

FILES = ["cluster.key", "cluster.key_secret", "gateway.key", "gateway.key_secret",
         "authorized/cluster.key"]


def test_generate_writes_the_layout_and_loads_back(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    written = keys.generate(d)
    assert sorted(p.relative_to(d).as_posix() for p in written) == sorted(FILES)
    for name in ("cluster.key_secret", "gateway.key_secret"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    cluster, gateway = keys.load_cluster(d), keys.load_gateway(d)
    assert cluster != gateway
    for pair in (cluster, gateway):
        assert len(pair.public) == len(pair.secret) == 40
        assert zmq.curve_public(pair.secret) == pair.public
    assert keys.load_gateway_public(d) == gateway.public
    authorized, _ = zmq.auth.load_certificate(d / "authorized" / "cluster.key")
    assert authorized == cluster.public
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no staging dir left


def test_generate_again_replaces_if_missing_keeps(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    keys.generate(d)
    first = keys.load_cluster(d)
    assert keys.generate(d, if_missing=True) == []
    assert keys.load_cluster(d) == first
    keys.generate(d)
    assert keys.load_cluster(d) != first


def test_if_missing_writes_only_what_is_missing(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    keys.generate(d)
    cluster, gateway = keys.load_cluster(d), keys.load_gateway(d)
    (d / "gateway.key").unlink()  # a lost public half is derived from its secret
    (d / "authorized" / "cluster.key").unlink()
    written = keys.generate(d, if_missing=True)
    assert written == [d / "gateway.key", d / "authorized" / "cluster.key"]
    assert keys.load_gateway(d) == gateway and keys.load_cluster(d) == cluster
    (d / "gateway.key_secret").write_text("garbage\n")  # an unreadable secret: a new pair
    assert keys.generate(d, if_missing=True) == [d / "gateway.key", d / "gateway.key_secret"]
    assert keys.load_gateway(d) != gateway and keys.load_cluster(d) == cluster


def test_keys_missing_tells_what_to_run(tmp_path: Path) -> None:
    d = tmp_path / "nowhere"
    for load in (keys.load_cluster, keys.load_gateway, keys.load_gateway_public):
        with pytest.raises(keys.KeysMissing) as caught:
            load(d)
        assert str(caught.value) == f"SOIM_KEYS_DIR: no keys in {d}; run soimctl keys generate"
        assert isinstance(caught.value, ConfigError)


def test_mismatched_pair_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    keys.generate(d)
    os.replace(d / "gateway.key", d / "cluster.key")
    with pytest.raises(keys.KeysMissing, match="does not match"):
        keys.load_cluster(d)


def test_soimctl_keys_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "keys"
    assert soimctl(["keys", "generate", "--dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert all(f"wrote {d / name}" in out for name in FILES)
    first = keys.load_cluster(d)
    assert soimctl(["keys", "generate", "--dir", str(d), "--if-missing"]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert keys.load_cluster(d) == first


def test_soimctl_keys_generate_defaults_to_soim_keys_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SOIM_KEYS_DIR", str(tmp_path / "from-env"))
    assert soimctl(["keys", "generate"]) == 0
    assert f"wrote {tmp_path / 'from-env' / 'cluster.key'}" in capsys.readouterr().out
    assert keys.load_cluster(tmp_path / "from-env").public
