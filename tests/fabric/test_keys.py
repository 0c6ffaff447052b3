"""Curve key files: generate, load, keep with --if-missing, refuse to replace without --force,
the KeysMissing message, soimctl (and its --json)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import zmq

from fabric import keys
from fabric.config import ConfigError
from tools.soimctl import main as soimctl

FILES = [
    "node.key",
    "node.key_secret",
    "gateway.key",
    "gateway.key_secret",
    "cluster.secret",
    "token.secret",
    "authorized/node.key",
]


def test_generate_writes_the_layout_and_loads_back(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    written = keys.generate(d)
    assert sorted(p.relative_to(d).as_posix() for p in written) == sorted(FILES)
    for name in ("node.key_secret", "gateway.key_secret", "cluster.secret", "token.secret"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    node, gateway = keys.load_node(d), keys.load_client_plane(d)
    assert node != gateway
    for pair in (node, gateway):
        assert len(pair.public) == len(pair.secret) == 40
        assert zmq.curve_public(pair.secret) == pair.public
    assert keys.load_client_plane_public(d) == gateway.public
    authorized, _ = zmq.auth.load_certificate(d / "authorized" / "node.key")
    assert authorized == node.public
    assert keys.load_secret(d, keys.CLUSTER_SECRET) != keys.load_secret(d, keys.TOKEN_SECRET)
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no staging dir left


def test_generate_again_refuses_if_missing_keeps_force_replaces(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    keys.generate(d)
    first = keys.load_node(d)
    assert keys.generate(d, if_missing=True) == []
    assert keys.load_node(d) == first
    with pytest.raises(keys.KeysExist, match="cuts off every running node and client"):
        keys.generate(d)
    assert keys.load_node(d) == first
    (d / "gateway.key").unlink()  # one file is enough to refuse
    with pytest.raises(keys.KeysExist):
        keys.generate(d)
    keys.generate(d, force=True)
    assert keys.load_node(d) != first


def test_if_missing_writes_only_what_is_missing(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    keys.generate(d)
    node, gateway = keys.load_node(d), keys.load_client_plane(d)
    (d / "gateway.key").unlink()  # a lost public half is derived from its secret
    (d / "authorized" / "node.key").unlink()
    written = keys.generate(d, if_missing=True)
    assert written == [d / "gateway.key", d / "authorized" / "node.key"]
    assert keys.load_client_plane(d) == gateway and keys.load_node(d) == node
    (d / "gateway.key_secret").write_text("garbage\n")  # an unreadable secret: a new pair
    assert keys.generate(d, if_missing=True) == [d / "gateway.key", d / "gateway.key_secret"]
    assert keys.load_client_plane(d) != gateway and keys.load_node(d) == node


def test_keys_missing_tells_what_to_run(tmp_path: Path) -> None:
    d = tmp_path / "nowhere"
    for load in (keys.load_node, keys.load_client_plane, keys.load_client_plane_public):
        with pytest.raises(keys.KeysMissing) as caught:
            load(d)
        assert str(caught.value) == f"SOIM_KEYS_DIR: no keys in {d}; run soimctl keys generate"
        assert isinstance(caught.value, ConfigError)


def test_mismatched_pair_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    keys.generate(d)
    os.replace(d / "gateway.key", d / "node.key")
    with pytest.raises(keys.KeysMissing, match="does not match"):
        keys.load_node(d)


def test_soimctl_keys_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "keys"
    assert soimctl(["keys", "generate", "--dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert all(f"wrote {d / name}" in out for name in FILES)
    first = keys.load_node(d)
    assert soimctl(["keys", "generate", "--dir", str(d), "--if-missing"]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert keys.load_node(d) == first


def test_soimctl_keys_generate_refuses_to_replace_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "keys"
    assert soimctl(["keys", "generate", "--dir", str(d), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written == {"keys_dir": str(d), "written": [str(d / name) for name in FILES]}
    first = keys.load_node(d)
    assert soimctl(["keys", "generate", "--dir", str(d)]) == 2
    err = capsys.readouterr().err
    assert "cuts off every running node and client" in err and "--force" in err, err
    assert soimctl(["keys", "generate", "--dir", str(d), "--json"]) == 2
    refused = json.loads(capsys.readouterr().out)
    assert refused["error"] == "KEYS_EXIST" and "--if-missing" in refused["detail"]
    assert keys.load_node(d) == first
    assert soimctl(["keys", "generate", "--dir", str(d), "--if-missing", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == []
    assert soimctl(["keys", "generate", "--dir", str(d), "--force"]) == 0
    assert f"wrote {d / 'node.key_secret'}" in capsys.readouterr().out
    assert keys.load_node(d) != first


def test_soimctl_keys_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "keys"
    keys.generate(d)
    assert soimctl(["keys", "add-node", "host-b", "--dir", str(d), "--json"]) == 0
    added = json.loads(capsys.readouterr().out)["written"]
    assert added[-1] == str(d / "authorized" / "host-b.key")
    assert soimctl(["keys", "add-node", "host-b", "--dir", str(d), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "BAD_NAME"
    assert soimctl(["keys", "revoke", "host-b", "--dir", str(d), "--json"]) == 0
    removed = json.loads(capsys.readouterr().out)["removed"]
    assert removed[0] == str(d / "authorized" / "host-b.key")
    assert soimctl(["keys", "show", "--dir", str(tmp_path / "none"), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["variable"] == "SOIM_KEYS_DIR"


def test_soimctl_keys_generate_defaults_to_soim_keys_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOIM_KEYS_DIR", str(tmp_path / "from-env"))
    assert soimctl(["keys", "generate"]) == 0
    assert f"wrote {tmp_path / 'from-env' / 'node.key'}" in capsys.readouterr().out
    assert keys.load_node(tmp_path / "from-env").public


def test_add_node_and_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "keys"
    keys.generate(d)
    assert soimctl(["keys", "add-node", "host-b", "--dir", str(d)]) == 0
    assert f"wrote {d / 'nodes' / 'host-b.key_secret'}" in capsys.readouterr().out
    pair = keys.load_node(d, "host-b")
    assert stat.S_IMODE((d / "nodes" / "host-b.key_secret").stat().st_mode) == 0o600
    assert keys.authorized(d) == {keys.load_node(d).public: "node", pair.public: "host-b"}
    assert soimctl(["keys", "add-node", "host-b", "--dir", str(d)]) == 2  # taken
    assert "already authorized" in capsys.readouterr().err
    assert soimctl(["keys", "revoke", "host-b", "--dir", str(d)]) == 0
    assert keys.authorized(d) == {keys.load_node(d).public: "node"}
    with pytest.raises(keys.KeysMissing):
        keys.load_node(d, "host-b")
    for name in ("host-b", "node", "../x"):  # gone, this dir's own key, not a name
        assert soimctl(["keys", "revoke", name, "--dir", str(d)]) == 2
    assert keys.authorized(d) == {keys.load_node(d).public: "node"}


def test_soimctl_keys_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "keys"
    keys.generate(d)
    assert soimctl(["keys", "show", "--dir", str(d), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["gateway"] == keys.load_client_plane_public(d).decode()
    assert shown["authorized"] == {"node": keys.load_node(d).public.decode()}
    assert soimctl(["keys", "show", "--dir", str(d)]) == 0
    assert f"gateway key (for soim --server-key): {shown['gateway']}" in capsys.readouterr().out
