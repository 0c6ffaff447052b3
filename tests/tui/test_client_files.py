"""The files `soim` keeps in the user's config dir, on a real file system: the sessions file
(tokens per cluster and account, the last used one, forgetting, 0600, a damaged file named in
one error, one client's claim on an account shutting out another) and config.toml (every key
checked: unknown sections and keys, wrong types and colours are errors naming the file)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from tui.config_file import ClientConfig, ConfigFileError, Notify, load
from tui.token_store import TokenStore, TokenStoreError


def test_tokens_by_cluster_and_account(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "soim" / "sessions.json")
    assert store.lookup("c1") is None
    store.save("c1", "alice", "t-a")
    store.save("c1", "bob", "t-b")
    store.save("c2", "alice", "t-other")
    assert store.lookup("c1") == ("bob", "t-b")  # the last used
    assert store.lookup("c1", "alice") == ("alice", "t-a")
    assert store.lookup("c2") == ("alice", "t-other")
    store.save("c1", "bob", "")  # forgotten: the other account is the last one now
    assert store.lookup("c1") == ("alice", "t-a") and store.lookup("c1", "bob") is None
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


def test_a_damaged_sessions_file_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    for text in ("{not json", '{"clusters": []}', '{"clusters": {"c": {"tokens": 3}}}'):
        path.write_text(text)
        with pytest.raises(TokenStoreError, match="not a soim sessions file"):
            TokenStore(path).lookup("c")


def test_one_client_claims_an_account(tmp_path: Path) -> None:
    path = tmp_path / "soim" / "sessions.json"
    first, second = TokenStore(path), TokenStore(path)
    assert first.claim("c", "alice") and first.claim("c", "alice")
    assert not second.claim("c", "alice")
    assert second.claim("c", "bob")  # another account is free
    first.release_others("c", "carol")  # first switched to carol: alice is free again
    assert second.claim("c", "alice")


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert load(path) == ClientConfig()  # no file: nothing set
    path.write_text(
        '[client]\ndevice = "laptop"\nremember = false\n[notify]\nbell = false\n'
        '[colours]\nown = "cyan"\n'
    )
    loaded = load(path)
    assert (loaded.device, loaded.remember, loaded.notify) == (
        "laptop",
        False,
        Notify(bell=False, title=True),
    )
    assert loaded.colours == {"own": "cyan"}
    for text, error in [
        ("[servers]\n", "unknown section [servers]"),
        ("[client]\ndevise = 'x'\n", "unknown key client.devise"),
        ("[client]\nremember = 'yes'\n", "client.remember must be a bool"),
        ("[colours]\nown = 'pink'\n", "colours.own must be one of"),
        ("[colours]\nsidebar = 'red'\n", "unknown key colours.sidebar"),
        ("client = 3\n", "[client] must be a table"),
        ("[client\n", "config.toml"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigFileError, match=re.escape(error)):
            load(path)
