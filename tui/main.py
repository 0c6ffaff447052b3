"""soim — the so-im chat client.

Usage:
  soim [--plain] [--server ENDPOINT] [--server-key KEY] [--device NAME]
  soim (-h | --help)

Options:
  --plain            Line mode for pipes, scripts and screen readers: commands on stdin
                     (without '/'), results and messages on stdout.
  --server ENDPOINT  A gateway's client endpoint, e.g. tcp://127.0.0.1:7000. Without it,
                     the gateways of SOIM_CLUSTER are found by zeroconf.
  --server-key KEY   The cluster's gateway public key (Z85, 40 characters), from its
                     operator. Default: gateway.key in SOIM_KEYS_DIR (var/keys), else the
                     key remembered for SOIM_CLUSTER in ~/.config/soim/known_gateways, else
                     (first use) the key the gateways announce, remembered from then on.
  --device NAME      Names this client among your sessions [default: soim].
  -h --help          Show this.

Role: the entry point — parse the arguments, read the SOIM_* settings, decide which gateway key
to trust (`tui.known_keys`), find a gateway that proves it holds that key (given, or discovered
by zeroconf and probed: `tui.gateway_pick`; the gateway's login redirect then moves the client
to the least loaded one, which only the cluster knows from heartbeats), open a `ClientSession`
that can fail over to any discovered gateway, and run the full-screen app or the line mode.
Configuration errors print one line and exit 2; a refusal to trust a gateway exits 1.
Peer sockets: the session's DEALER to a gateway; the probes' DEALERs; zeroconf's UDP sockets
when discovering.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Callable

import zmq.asyncio
from docopt import docopt

from fabric import env_file
from fabric.config import Config, ConfigError
from fabric.discovery import Discovery, NodeInfo
from tui.app import run_app
from tui.gateway_pick import NotFound, Refused, check_server, gateway_endpoints, pick_discovered
from tui.known_keys import (
    Z85_KEY,
    KnownGateways,
    KnownKeysError,
    Pin,
    known_gateways_path,
    resolve_pin,
)
from tui.plain import run_plain
from tui.session import ClientSession

_ENDPOINT = re.compile(r"^tcp://[A-Za-z0-9_.:\[\]-]+:\d{1,5}$")
_DEVICE = re.compile(r"^\S.{0,31}$")


class Usage(Exception):
    """A bad argument or setting: one line for the user, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__.split("\nRole:")[0], argv)
    try:
        env_file.load()
        known = KnownGateways(known_gateways_path(os.environ))
        cfg = Config.from_env(role="soim")
        endpoint, device = _check(args)
        pin = resolve_pin(str(args["--server-key"] or ""), cfg.keys_dir, cfg.cluster, known)
        if endpoint and pin is None:
            raise Usage(f"no gateway key to trust for {endpoint}: pass --server-key KEY (the "
                        "cluster's operator reads it with: soimctl keys show), or set "
                        "SOIM_KEYS_DIR to the cluster's keys")
    except (ConfigError, KnownKeysError, Usage) as err:
        print(f"soim: {err}", file=sys.stderr)
        return 2
    if not args["--plain"] and not sys.stdin.isatty():
        print("soim: the full-screen client needs a terminal; use --plain", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_client(cfg, endpoint, pin, known, device, plain=bool(args["--plain"])))
    except (NotFound, Refused, KnownKeysError) as err:
        print(f"soim: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _check(args: dict[str, object]) -> tuple[str, str]:
    """(endpoint or "", device) from the arguments, validated (the key too)."""
    endpoint = str(args["--server"] or "")
    key = str(args["--server-key"] or "")
    device = str(args["--device"])
    if endpoint and not _ENDPOINT.match(endpoint):
        raise Usage(f"--server: not a tcp://host:port endpoint: {endpoint!r}")
    if key and not Z85_KEY.match(key):
        raise Usage("--server-key: must be a Z85 public key of 40 characters")
    if not _DEVICE.match(device):
        raise Usage(f"--device: 1-32 characters, not starting with a space: {device!r}")
    return endpoint, device


async def _client(cfg: Config, endpoint: str, pin: Pin | None, known: KnownGateways,
                  device: str, plain: bool) -> int:
    notes: list[str] = []
    say: Callable[[str], None] = _to_stderr if plain else notes.append
    ctx = zmq.asyncio.Context()
    discovery: Discovery | None = None
    session: ClientSession | None = None
    try:
        if endpoint:
            assert pin is not None  # main() refuses --server without a key
            await check_server(ctx, endpoint, pin)
            locator = None
        else:
            discovery = Discovery(cfg, _ignore, _ignore, _ignore)
            await discovery.async_start()
            endpoint, pin = await pick_discovered(ctx, discovery, cfg.cluster, pin, known, say)
            locator = _locator(discovery)
        session = ClientSession(endpoint, pin.key, device=device, ctx=ctx, locator=locator,
                                start_at="unread")
        for note in notes:
            session.notify(note)
        await session.connect()
        return await (run_plain(session) if plain else run_app(session))
    finally:
        if session is not None:
            await session.close()
        if discovery is not None:
            await discovery.async_close()
        ctx.destroy(linger=0)


def _locator(discovery: Discovery) -> Callable[[], list[str]]:
    return lambda: gateway_endpoints(discovery)


def _to_stderr(text: str) -> None:
    print(f"soim: {text}", file=sys.stderr, flush=True)


def _ignore(info: NodeInfo) -> None:
    """Discovery callbacks: the client reads `Discovery.peers()` when it needs gateways."""


if __name__ == "__main__":
    sys.exit(main())
