"""soim — the so-im chat client.

Usage:
  soim [--plain] [--server ENDPOINT] [--server-key KEY] [--device NAME] [--account NAME]
       [--config FILE]
  soim --logout [--server ENDPOINT] [--server-key KEY] [--account NAME] [--config FILE]
  soim (-h | --help)

Options:
  --plain            Line mode for pipes, scripts and screen readers: commands on stdin
                     (without '/'), results and messages on stdout. Exits 0 when every
                     command worked, 1 after a failed one, 2 after a line that is none.
  --logout           End the remembered login on the server (its token stops working) and
                     forget it here.
  --account NAME     The remembered login to resume (or end), when several accounts are
                     remembered for the cluster. Default: the last one used.
  --config FILE      The config file. Default: config.toml in ~/.config/soim (or in
                     $XDG_CONFIG_HOME/soim).
  --server ENDPOINT  A gateway's client endpoint, e.g. tcp://127.0.0.1:7000. Without it,
                     the gateways of SOIM_CLUSTER are found by zeroconf.
  --server-key KEY   The cluster's gateway public key (Z85, 40 characters), from its
                     operator. Default: gateway.key in SOIM_KEYS_DIR (var/keys), else the
                     key remembered for SOIM_CLUSTER in ~/.config/soim/known_gateways, else
                     (first use) the key the gateways announce, remembered from then on.
  --device NAME      Names this client among your sessions. Default: soim.
  -h --help          Show this.

Every option but --plain and --logout may be set in the config file instead (see README).

Role: the entry point — parse the arguments, read the config file (`tui.config_file`; options
win over it) and the SOIM_* settings, decide which gateway key to trust (`tui.known_keys`), find
a gateway that proves it holds that key (given, or discovered by zeroconf and probed:
`tui.gateway_pick`; the gateway's login redirect then moves the client to the least loaded one,
which only the cluster knows from heartbeats), open a `ClientSession` that can fail over to any
gateway it knows of (discovery runs with --server too), resume the remembered login
(`tui.remembered_login`), and run the full-screen app or the line mode; at exit the session is
kept for the next start unless the config says `remember = false`. Configuration errors print
one line and exit 2; a refusal to trust a gateway exits 1.
Peer sockets: the session's DEALER to a gateway; the probes' DEALERs; zeroconf's UDP sockets.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq.asyncio
from docopt import docopt

from fabric import env_file
from fabric.config import Config, ConfigError
from fabric.discovery import Discovery, NodeInfo
from fabric.methods import RpcError
from tui import config_file
from tui.app import run_app
from tui.config_file import ClientConfig, ConfigFileError, Notify
from tui.gateway_pick import NotFound, Refused, check_server, gateway_endpoints, pick_discovered
from tui.known_keys import (
    Z85_KEY,
    KnownGateways,
    KnownKeysError,
    Pin,
    fingerprint,
    known_gateways_path,
    resolve_pin,
)
from tui.palette import Palette
from tui.plain import run_plain
from tui.remembered_login import RememberedLogin
from tui.session import ClientSession
from tui.token_store import FILE_NAME as SESSIONS_FILE
from tui.token_store import TokenStore

_ENDPOINT = re.compile(r"^tcp://[A-Za-z0-9_.:\[\]-]+:\d{1,5}$")
_DEVICE = re.compile(r"^\S.{0,31}$")
_ACCOUNT = re.compile(r"^\S{1,64}$")


class Usage(Exception):
    """A bad argument or setting: one line for the user, exit status 2."""


@dataclass(frozen=True)
class Choices:
    """What the options and the config file ask for, checked."""

    endpoint: str
    device: str
    account: str
    remember: bool
    mode: str  # "app", "plain" or "logout"
    notify: Notify
    palette: Palette


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__.split("\nRole:")[0], argv)
    try:
        env_file.load()
        known = KnownGateways(known_gateways_path(os.environ))
        config_dir = known.path.parent
        settings = config_file.load(
            Path(str(args["--config"])) if args["--config"] else config_dir / config_file.FILE_NAME
        )
        cfg = Config.from_env(role="soim")
        choices = _check(args, settings)
        key = str(args["--server-key"] or settings.key)
        pin = resolve_pin(key, cfg.keys_dir, cfg.cluster, known)
        if choices.endpoint and pin is None:
            raise Usage(
                f"no gateway key to trust for {choices.endpoint}: pass --server-key KEY "
                "(the cluster's operator reads it with: soimctl keys show), or set "
                "SOIM_KEYS_DIR to the cluster's keys"
            )
    except (ConfigError, ConfigFileError, KnownKeysError, Usage) as err:
        print(f"soim: {err}", file=sys.stderr)
        return 2
    if choices.mode == "app" and not sys.stdin.isatty():
        print("soim: the full-screen client needs a terminal; use --plain", file=sys.stderr)
        return 2
    store = TokenStore(config_dir / SESSIONS_FILE)
    try:
        return asyncio.run(_client(cfg, choices, pin, known, store))
    except (NotFound, Refused, KnownKeysError) as err:
        print(f"soim: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _check(args: dict[str, object], settings: ClientConfig) -> Choices:
    """The options, the config file filling in what they leave out, validated."""
    endpoint = str(args["--server"] or settings.endpoint)
    key = str(args["--server-key"] or settings.key)
    device = str(args["--device"] or settings.device or "soim")
    account = str(args["--account"] or settings.account)
    if endpoint and not _ENDPOINT.match(endpoint):
        raise Usage(f"--server: not a tcp://host:port endpoint: {endpoint!r}")
    if key and not Z85_KEY.match(key):
        raise Usage("--server-key: must be a Z85 public key of 40 characters")
    if not _DEVICE.match(device):
        raise Usage(f"--device: 1-32 characters, not starting with a space: {device!r}")
    if account and not _ACCOUNT.match(account):
        raise Usage(f"--account: 1-64 characters without spaces: {account!r}")
    mode = "logout" if args["--logout"] else "plain" if args["--plain"] else "app"
    return Choices(
        endpoint,
        device,
        account,
        settings.remember,
        mode,
        settings.notify,
        Palette(settings.colours),
    )


async def _client(
    cfg: Config, choices: Choices, pin: Pin | None, known: KnownGateways, store: TokenStore
) -> int:
    notes: list[str] = []
    say: Callable[[str], None] = notes.append if choices.mode == "app" else _to_stderr
    ctx = zmq.asyncio.Context()
    discovery = await _discovery(cfg)
    session: ClientSession | None = None
    endpoint = choices.endpoint
    try:
        if endpoint:
            assert pin is not None  # main() refuses --server without a key
            await check_server(ctx, endpoint, pin)
        elif discovery is None:
            raise NotFound("zeroconf discovery could not start; pass --server and --server-key")
        else:
            endpoint, pin = await pick_discovered(ctx, discovery, cfg.cluster, pin, known, say)
        remembered = RememberedLogin(store, fingerprint(pin.key), say)
        keep = choices.remember or choices.mode == "logout"
        session = ClientSession(
            endpoint,
            pin.key,
            device=choices.device,
            ctx=ctx,
            locator=_locator(discovery),
            start_at="unread",
            on_token=remembered.on_token if keep else None,
        )
        await session.connect()
        if choices.mode == "logout":
            print(await remembered.logout(session, choices.account), flush=True)
            return 0
        if keep and (reply := await remembered.resume(session, choices.account)):
            say(f"logged in as {reply.account} (uid {reply.user_id}) with the remembered login")
        for note in notes:
            session.notify(note)
        if choices.mode == "plain":
            return await run_plain(session)
        return await run_app(
            session, bell=choices.notify.bell, title=choices.notify.title, palette=choices.palette
        )
    except RpcError as err:  # --logout: the gateway refused or did not answer
        print(f"soim: {err}", file=sys.stderr)
        return 1
    finally:
        if session is not None:
            await session.close(logout=not choices.remember)
        if discovery is not None:
            await discovery.async_close()
        ctx.destroy(linger=0)


async def _discovery(cfg: Config) -> Discovery | None:
    """The cluster's gateways by zeroconf, also with --server (a failover list); None where
    zeroconf cannot start (no multicast interface)."""
    discovery = Discovery(cfg, _ignore, _ignore, _ignore)
    try:
        await discovery.async_start()
    except OSError:
        return None
    return discovery


def _locator(discovery: Discovery | None) -> Callable[[], list[str]] | None:
    return None if discovery is None else lambda: gateway_endpoints(discovery)


def _to_stderr(text: str) -> None:
    print(f"soim: {text}", file=sys.stderr, flush=True)


def _ignore(info: NodeInfo) -> None:
    """Discovery callbacks: the client reads `Discovery.records()` when it needs gateways."""


if __name__ == "__main__":
    sys.exit(main())
