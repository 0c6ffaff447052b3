"""Choose the gateway `soim` talks to, trusting only the pinned gateway key.

Role: a discovery record only says where a gateway may be; it proves nothing. Every endpoint
is dialed with the pinned key (`tui.known_keys.Pin`), never with the key a record names, and
counts only once a Curve handshake with that key succeeds — which only the holder of the
gateway's secret key can complete. Until then ZeroMQ sends nothing but the Curve greeting and
HELLO (no request, so no password or token), and whoever fails the handshake is passed over
for the next gateway. With no pin (first use) the cluster's records must all name one key, and
it is remembered only after a gateway proved it holds it. When no gateway proves the pinned
key, `Refused` says so loudly: which key each record named, the file the pin came from, and
what to do.
Peer sockets: one short-lived DEALER (Curve client, fresh keypair) per probed endpoint, with a
handshake monitor; zeroconf's, through the caller's `Discovery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import time
from collections.abc import Callable

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from fabric import timing
from fabric.discovery import Discovery, NodeInfo
from fabric.security import anonymous_client
from tui.known_keys import KnownGateways, Pin, fingerprint

DISCOVER_WAIT_S = 5.0
DISCOVER_EXTRA_S = 0.5
_WATCHED = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class Handshake(enum.Enum):
    """How a gateway answered a Curve handshake with the pinned key."""

    OK = "proved it holds the pinned key"
    REJECTED = "broke off the Curve handshake: it does not hold the pinned key"
    DENIED = "refused the connection (ZAP)"
    SILENT = "did not answer"


class NotFound(Exception):
    """No gateway record at all: one line for the user."""


class Refused(Exception):
    """No gateway proved the key the client trusts: a loud, multi-line refusal."""


async def probe(
    ctx: zmq.asyncio.Context,
    endpoint: str,
    key: bytes,
    timeout_s: float = timing.CLIENT_HANDSHAKE_TIMEOUT_S,
) -> Handshake:
    """Dial `endpoint` with `key` and report the Curve handshake; nothing else is sent."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    anonymous_client(sock, key)
    monitor = sock.get_monitor_socket(_WATCHED)
    try:
        sock.connect(endpoint)
        async with asyncio.timeout(timeout_s):
            event = parse_monitor_message(await monitor.recv_multipart())["event"]
    except TimeoutError:
        return Handshake.SILENT
    finally:
        with contextlib.suppress(zmq.ZMQError):
            sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return Handshake.OK
    return Handshake.DENIED if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH else Handshake.REJECTED


async def first_proven(
    ctx: zmq.asyncio.Context, endpoints: list[str], key: bytes
) -> tuple[str | None, dict[str, Handshake]]:
    """Probe every endpoint at once; the first to prove `key` (or None), and what each said."""
    tasks = {asyncio.ensure_future(probe(ctx, ep, key)): ep for ep in endpoints}
    results: dict[str, Handshake] = {}
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                results[tasks[task]] = task.result()
                if task.result() is Handshake.OK:
                    return tasks[task], results
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return None, results


def gateway_records(discovery: Discovery) -> list[NodeInfo]:
    """The gateway records of the client's cluster (hints of where to dial, nothing more)."""
    return [p for p in discovery.records() if p.role == "gateway" and "client" in p.endpoints]


def gateway_endpoints(discovery: Discovery) -> list[str]:
    """Where the cluster's gateways say they are: the link's failover list."""
    return sorted({p.endpoints["client"] for p in gateway_records(discovery)})


async def check_server(ctx: zmq.asyncio.Context, endpoint: str, pin: Pin) -> None:
    """--server: refuse if the gateway there breaks off the handshake with the pinned key (one
    that does not answer yet may be starting: the link keeps trying)."""
    if await probe(ctx, endpoint, pin.key) is Handshake.REJECTED:
        raise Refused(
            f"REFUSED: the gateway at {endpoint} {Handshake.REJECTED.value} "
            f"{pin.key.decode()} (from {pin.source}). Someone may be impersonating it, or the "
            f"cluster's gateway key changed. Nothing was sent to it. {_remedy(pin)}"
        )


async def pick_discovered(
    ctx: zmq.asyncio.Context,
    discovery: Discovery,
    cluster: str,
    pin: Pin | None,
    known: KnownGateways,
    say: Callable[[str], None],
) -> tuple[str, Pin]:
    """A discovered gateway that proved the pinned key (trusting on first use if no pin)."""
    deadline = time.monotonic() + DISCOVER_WAIT_S
    records = await _first_records(discovery, deadline)
    if not records:
        raise NotFound(
            f"no gateway of cluster {cluster!r} found in {DISCOVER_WAIT_S:.0f} s; "
            "start one (make run) or pass --server and --server-key"
        )
    first_use = pin is None
    if pin is None:
        pin = _first_use_pin(cluster, records, known)
    tried: dict[str, Handshake] = {}
    while True:
        fresh = [ep for ep in {r.endpoints["client"] for r in records} if ep not in tried]
        random.shuffle(fresh)
        chosen, results = await first_proven(ctx, fresh, pin.key)
        tried.update(results)
        if chosen is not None:
            break
        if time.monotonic() >= deadline:
            raise Refused(_refusal(cluster, pin, records, tried))
        await asyncio.sleep(timing.DISCOVERY_SETTLE_S)  # polling the discovery view
        records = gateway_records(discovery) or records
    for record in records:
        if record.client_key and record.client_key.encode() != pin.key:
            say(
                f"warning: the gateway record {record.node_id} at {record.endpoints['client']} "
                f"names another key ({record.client_key}); it was dialed only with the pinned "
                f"key (from {pin.source})"
            )
    if first_use:
        known.remember(cluster, pin.key)
        say(
            f"first connection to cluster {cluster!r}: its gateway key is {pin.key.decode()} "
            f"({fingerprint(pin.key)}), now remembered in {known.path}; ask the cluster's "
            "operator to confirm it (on a node: soimctl keys show)"
        )
    return chosen, pin


async def _first_records(discovery: Discovery, deadline: float) -> list[NodeInfo]:
    """The gateway records seen once the first one came, plus a moment for the others."""
    found = gateway_records(discovery)
    while not found and time.monotonic() < deadline:
        await asyncio.sleep(timing.DISCOVERY_SETTLE_S)  # polling the discovery view
        found = gateway_records(discovery)
    if found:
        await asyncio.sleep(DISCOVER_EXTRA_S)  # a moment for the other gateways' records
        found = gateway_records(discovery) or found
    return found


def _first_use_pin(cluster: str, records: list[NodeInfo], known: KnownGateways) -> Pin:
    """First use: the one key every gateway record of the cluster names, or a refusal."""
    named = sorted({r.client_key for r in records if r.client_key})
    if len(named) != 1:
        lines = "\n".join(
            f"  {r.endpoints['client']} ({r.node_id}) names {r.client_key or '-'}" for r in records
        )
        raise Refused(
            f"REFUSED: first connection to cluster {cluster!r}, and its gateway records do not "
            f"agree on one gateway key:\n{lines}\nSomeone on this network may be impersonating "
            "its gateways. Nothing was sent. Ask the cluster's operator for the key and pass it "
            f"with --server-key, or write 'CLUSTER KEY' into {known.path}."
        )
    return Pin(
        named[0].encode(),
        "the gateways' discovery records (first use)",
        f"nothing was remembered in {known.path}; ask the cluster's operator for the "
        "key and pass it with --server-key",
    )


def _refusal(cluster: str, pin: Pin, records: list[NodeInfo], tried: dict[str, Handshake]) -> str:
    names = {r.endpoints["client"]: r for r in records}
    lines = []
    for endpoint, result in sorted(tried.items()):
        record = names.get(endpoint)
        seen = f" (record {record.node_id} names key {record.client_key or '-'})" if record else ""
        lines.append(f"  {endpoint}{seen}: {result.value}")
    return (
        f"REFUSED: no gateway of cluster {cluster!r} proved it holds the pinned gateway key "
        f"{pin.key.decode()} (from {pin.source}):\n" + "\n".join(lines) + "\n"
        "Someone may be impersonating the cluster's gateways, or its gateway key changed. "
        f"No password or token was sent. {_remedy(pin)}"
    )


def _remedy(pin: Pin) -> str:
    return pin.remedy[:1].upper() + pin.remedy[1:] + "."
