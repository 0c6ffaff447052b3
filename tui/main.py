"""soim — the so-im chat client.

Usage:
  soim [--plain] [--server ENDPOINT] [--server-key KEY] [--device NAME]
  soim (-h | --help)

Options:
  --plain            Line mode for pipes, scripts and screen readers: commands on stdin
                     (without '/'), results and messages on stdout.
  --server ENDPOINT  A gateway's client endpoint, e.g. tcp://127.0.0.1:7000. Without it,
                     the gateways of SOIM_CLUSTER on this host are found by zeroconf.
  --server-key KEY   The gateway's Curve public key (Z85, 40 characters). Default: the
                     discovered record's, or gateway.key in SOIM_KEYS_DIR (var/keys).
  --device NAME      Names this client among your sessions [default: soim].
  -h --help          Show this.

Role: the entry point — parse the arguments, read the SOIM_* settings, find a gateway (given,
or discovered by zeroconf: the cluster's gateways on this host, one picked at random; the
gateway's login redirect then moves the client to the least loaded one, which only the cluster
knows from heartbeats), open a `ClientSession` that can fail over to any discovered gateway,
and run the full-screen app or the line mode. Configuration errors print one line and exit 2.
Peer sockets: the session's DEALER to a gateway; zeroconf's UDP sockets when discovering.
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
import time
from collections.abc import Callable

from docopt import docopt

from fabric import timing
from fabric.config import Config, ConfigError
from fabric.discovery import Discovery, NodeInfo
from fabric.keys import load_gateway_public
from tui.app import run_app
from tui.link import Gateway
from tui.plain import run_plain
from tui.session import ClientSession

DISCOVER_WAIT_S = 5.0
DISCOVER_EXTRA_S = 0.5
_ENDPOINT = re.compile(r"^tcp://[A-Za-z0-9_.:\[\]-]+:\d{1,5}$")
_Z85 = re.compile(r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_DEVICE = re.compile(r"^\S.{0,31}$")


class Usage(Exception):
    """A bad argument or setting: one line for the user, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__.split("\nRole:")[0], argv)
    try:
        cfg = Config.from_env(role="soim")
        endpoint, key, device = _check(args, cfg)
    except (ConfigError, Usage) as err:
        print(f"soim: {err}", file=sys.stderr)
        return 2
    if not args["--plain"] and not sys.stdin.isatty():
        print("soim: the full-screen client needs a terminal; use --plain", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_client(cfg, endpoint, key, device, plain=bool(args["--plain"])))
    except Usage as err:
        print(f"soim: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _check(args: dict[str, object], cfg: Config) -> tuple[str, bytes, str]:
    """(endpoint or "", server key or b"", device) from the arguments, validated."""
    endpoint = str(args["--server"] or "")
    key = str(args["--server-key"] or "")
    device = str(args["--device"])
    if endpoint and not _ENDPOINT.match(endpoint):
        raise Usage(f"--server: not a tcp://host:port endpoint: {endpoint!r}")
    if key and not _Z85.match(key):
        raise Usage("--server-key: must be a Z85 public key of 40 characters")
    if not _DEVICE.match(device):
        raise Usage(f"--device: 1-32 characters, not starting with a space: {device!r}")
    if endpoint and not key:
        key = load_gateway_public(cfg.keys_dir).decode()
    return endpoint, key.encode(), device


async def _client(cfg: Config, endpoint: str, key: bytes, device: str, plain: bool) -> int:
    discovery: Discovery | None = None
    locator: Callable[[], list[Gateway]] | None = None
    if not endpoint:
        discovery = Discovery(cfg, _ignore, _ignore, _ignore)
        await discovery.async_start()
        found = await _gateways(discovery, cfg)
        endpoint, key = random.choice(found)
        locator = _locator(discovery)
    session = ClientSession(endpoint, key, device=device, locator=locator, start_at="unread")
    try:
        await session.connect()
        return await (run_plain(session) if plain else run_app(session))
    finally:
        await session.close()
        if discovery is not None:
            await discovery.async_close()


async def _gateways(discovery: Discovery, cfg: Config) -> list[Gateway]:
    """The gateways announced on this host, once the first has been seen; Usage if none."""
    deadline = time.monotonic() + DISCOVER_WAIT_S
    found = _locator(discovery)()
    while not found and time.monotonic() < deadline:
        await asyncio.sleep(timing.DISCOVERY_SETTLE_S)  # polling the discovery view
        found = _locator(discovery)()
    if not found:
        raise Usage(f"no gateway of cluster {cfg.cluster!r} found on "
                    f"{','.join(cfg.discovery_ifaces)} in {DISCOVER_WAIT_S:.0f} s; start one "
                    "(make run) or pass --server and --server-key")
    await asyncio.sleep(DISCOVER_EXTRA_S)  # a moment for the other gateways' records
    return _locator(discovery)()


def _locator(discovery: Discovery) -> Callable[[], list[Gateway]]:
    def gateways() -> list[Gateway]:
        return [(p.endpoints["client"], p.client_key.encode())
                for p in discovery.peers().values()
                if p.role == "gateway" and "client" in p.endpoints and p.client_key]
    return gateways


def _ignore(info: NodeInfo) -> None:
    """Discovery callbacks: the client reads `Discovery.peers()` when it needs gateways."""


if __name__ == "__main__":
    sys.exit(main())
