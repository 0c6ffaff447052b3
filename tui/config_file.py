"""The `soim` config file: the user's defaults for the gateway, the device and the screen.

Role: read `config.toml` from the user's soim config dir (`$XDG_CONFIG_HOME/soim`, default
`~/.config/soim`) or the file `--config` names, with the standard library's TOML reader, and
check every key: a missing file is an empty config, anything else wrong is a `ConfigFileError`
naming the file and the key (the client prints it and exits 2). Command-line options win over
the file. The keys (all optional):

    [server]
    endpoint = "tcp://127.0.0.1:7000"   # like --server
    key = "…40 Z85 characters…"          # like --server-key

    [client]
    device = "laptop"    # like --device
    account = "alice"    # the remembered login to resume (like --account)
    remember = true      # keep the login between runs (false: log out at exit)

    [colours]            # screen element = colour name (see COLOUR_NAMES, `tui.palette`)
    own = "green"

    [notify]
    bell = true          # ring the terminal bell for a message not on screen
    title = true         # show the unread count in the window title

No sockets: one file read.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_NAME = "config.toml"
COLOUR_ELEMENTS = frozenset(
    {"own", "other", "notice", "error", "status", "unread", "mention", "time"}
)
COLOUR_NAMES = frozenset(
    {"default", "black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"}
)


class ConfigFileError(Exception):
    """The config file is unreadable or has a bad key; `str()` names the file and key."""


@dataclass(frozen=True)
class Notify:
    """How a message that is not on screen is announced."""

    bell: bool = True
    title: bool = True


@dataclass(frozen=True)
class ClientConfig:
    """What the config file sets; empty strings where it sets nothing."""

    endpoint: str = ""
    key: str = ""
    device: str = ""
    account: str = ""
    remember: bool = True
    colours: Mapping[str, str] = field(default_factory=dict)
    notify: Notify = Notify()


_SECTIONS: dict[str, dict[str, type]] = {
    "server": {"endpoint": str, "key": str},
    "client": {"device": str, "account": str, "remember": bool},
    "notify": {"bell": bool, "title": bool},
}


def load(path: Path) -> ClientConfig:
    """The config in `path`; an absent file is the empty config."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        return ClientConfig()
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigFileError(f"{path}: {err}") from None
    for section in data:
        if section not in {*_SECTIONS, "colours"}:
            raise ConfigFileError(
                f"{path}: unknown section [{section}] (known: "
                f"{', '.join(sorted({*_SECTIONS, 'colours'}))})"
            )
    values = {
        name: _section(path, name, data.get(name, {}), keys) for name, keys in _SECTIONS.items()
    }
    return ClientConfig(
        **values["server"],
        **values["client"],
        colours=_colours(path, data.get("colours", {})),
        notify=Notify(**values["notify"]),
    )


def _section(path: Path, name: str, table: Any, keys: dict[str, type]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigFileError(f"{path}: [{name}] must be a table")
    for key, value in table.items():
        kind = keys.get(key)
        if kind is None:
            raise ConfigFileError(
                f"{path}: unknown key {name}.{key} (known: {', '.join(sorted(keys))})"
            )
        if not isinstance(value, kind):
            raise ConfigFileError(f"{path}: {name}.{key} must be a {kind.__name__}")
    return dict(table)


def _colours(path: Path, table: Any) -> dict[str, str]:
    if not isinstance(table, dict):
        raise ConfigFileError(f"{path}: [colours] must be a table")
    for element, colour in table.items():
        if element not in COLOUR_ELEMENTS:
            raise ConfigFileError(
                f"{path}: unknown key colours.{element} (known: "
                f"{', '.join(sorted(COLOUR_ELEMENTS))})"
            )
        if colour not in COLOUR_NAMES:
            raise ConfigFileError(
                f"{path}: colours.{element} must be one of {', '.join(sorted(COLOUR_NAMES))}"
            )
    return dict(table)
