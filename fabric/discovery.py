"""Zeroconf (mDNS) discovery: announce this node, browse for the nodes of its cluster.

Role: publish one `_soim._tcp.local.` service whose TXT record is a `NodeInfo`, and turn the
services other nodes publish into added / updated / removed callbacks. Its peer sockets are the
UDP sockets of python-zeroconf on port 5353 (multicast group 224.0.0.251), opened only on the
addresses of `Config.discovery_ifaces` (default 127.0.0.1): never on a real interface unless
SOIM_DISCOVERY_IFACES names it. No ZeroMQ socket; liveness is fabric.membership's business,
because a crashed node sends no mDNS goodbye.

Loopback multicast on Linux: `lo` carries no MULTICAST flag, yet it works without root and
without `ip link set lo multicast on`. Zeroconf joins 224.0.0.251 with IP_ADD_MEMBERSHIP on
127.0.0.1, sends with IP_MULTICAST_IF=127.0.0.1 and IP_MULTICAST_LOOP=1, and the kernel loops
the datagrams back to every socket (any process) that joined the group on lo.

Questions are always QM (multicast answers), never zeroconf's default QU for a first query:
every node process and soimctl on a host has its own zeroconf bound to port 5353 (SO_REUSEPORT),
and the kernel hands a unicast answer to just one of those sockets — often another process's —
so a QU asker missed the answers of nodes on other hosts until its next query, ~1 s later.
A multicast answer reaches every socket that joined the group.

Browser events are coalesced: changes are collected for `timing.DISCOVERY_SETTLE_S`, then
applied in one pass (resolve every changed service, validate its TXT record, diff the view)
and the callbacks run on the event loop. A record that fails validation is ignored and counted
in `bad_records` by its `RecordError`; a peer can never crash the browser.

A record is a hint of where to dial, never an identity: anyone on the discovery network can
announce one, reuse a live node's id, or send a goodbye for another node's service. Nodes sign
their records with a key derived from the keys dir's cluster.secret (`sig`, an HMAC over the
other properties); a `Discovery` given that key drops unsigned and badly signed records before
anyone sees them, so a stranger's record is never dialled. Records are kept per service name,
not per node id, so a second record claiming a node id cannot hide the first; at most
`timing.MAX_DISCOVERY_RECORDS` are kept. Who a peer is comes from what it says over the
authenticated link (`fabric.admission`).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import socket
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import ifaddr
from zeroconf import (
    DNSQuestionType,
    DNSText,
    IPVersion,
    RecordUpdate,
    RecordUpdateListener,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from fabric import timing
from fabric.config import Config, ConfigError
from schema.contracts.roles import ROLES

log = logging.getLogger(__name__)

SERVICE_TYPE = "_soim._tcp.local."
TXT_VERSION = "1"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,253}$")
_ENDPOINT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
_ENDPOINT_RE = re.compile(r"^tcp://([A-Za-z0-9_.:-]{1,253}|\[[0-9A-Fa-f:]+\]):(\d{1,5})$")
_WEB_ENDPOINT_RE = re.compile(r"^wss?://([A-Za-z0-9_.:-]{1,253}|\[[0-9A-Fa-f:]+\]):(\d{1,5})/ws$")
"""A gateway's "web" endpoint: the URL of its WebSocket plane."""
ENDPOINT_PATTERNS = {
    "rpc": _ENDPOINT_RE,
    "events": _ENDPOINT_RE,
    "client": _ENDPOINT_RE,
    "web": _WEB_ENDPOINT_RE,
}
"""The endpoints a record may carry, by name; `from_txt` leaves out any other name."""
_VERSION_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,32}$")
_Z85_RE = re.compile(r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_EP = "ep."
_SIG = "sig"
_TXT_MAX = 255


class RecordError(enum.Enum):
    """Why a discovered service is not (or no longer) in the view. A closed set."""

    NOT_UTF8 = "not_utf8"
    TOO_LONG = "too_long"
    MISSING_FIELD = "missing_field"
    BAD_TXT_VERSION = "bad_txt_version"
    BAD_NAME = "bad_name"
    BAD_ROLE = "bad_role"
    BAD_HOST = "bad_host"
    BAD_ENDPOINT = "bad_endpoint"
    BAD_NUMBER = "bad_number"
    BAD_KEY = "bad_key"
    BAD_SIGNATURE = "bad_signature"
    TOO_MANY = "too_many"
    UNRESOLVED = "unresolved"


class DiscoveryError(ValueError):
    """A TXT record that is not a valid NodeInfo; `reason` is its RecordError."""

    def __init__(self, reason: RecordError, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class NodeInfo:
    """What a node announces about itself: the TXT record of its service."""

    node_id: str
    role: str
    cluster: str
    version: str
    host: str
    endpoints: Mapping[str, str]
    """{"rpc": "tcp://127.0.0.1:5555", "events": ..., "client": ..., "web": "ws://...:8080/ws"}"""
    metrics_port: int
    public_key: str  # z85 of the cluster server key
    client_key: str  # z85 of the gateway key; "" for every other role
    started_at: float  # time.time() when the node started

    def to_txt(self) -> dict[str, str]:
        """The TXT properties; `from_txt` reads them back."""
        txt = {
            "txtvers": TXT_VERSION,
            "id": self.node_id,
            "role": self.role,
            "cluster": self.cluster,
            "ver": self.version,
            "host": self.host,
            "metrics": str(self.metrics_port),
            "pk": self.public_key,
            "ck": self.client_key,
            "t": repr(self.started_at),
        }
        txt.update({_EP + name: url for name, url in self.endpoints.items()})
        return txt

    @classmethod
    def from_txt(cls, props: Mapping[bytes, bytes | None] | Mapping[str, str]) -> NodeInfo:
        """Validate TXT properties (as zeroconf or `to_txt` gives them); DiscoveryError if bad."""
        txt = _decode(props)
        if txt.get("txtvers") != TXT_VERSION:
            raise DiscoveryError(RecordError.BAD_TXT_VERSION, repr(txt.get("txtvers")))
        node_id = _matching(txt, "id", _NAME_RE, RecordError.BAD_NAME)
        cluster = _matching(txt, "cluster", _NAME_RE, RecordError.BAD_NAME)
        role = _field(txt, "role")
        if role not in ROLES:
            raise DiscoveryError(RecordError.BAD_ROLE, repr(role))
        endpoints = _endpoints(txt)
        client_key = txt.get("ck", "")
        if client_key and not _Z85_RE.match(client_key):
            raise DiscoveryError(RecordError.BAD_KEY, "ck is not a z85 key")
        return cls(
            node_id=node_id,
            role=role,
            cluster=cluster,
            version=_matching(txt, "ver", _VERSION_RE, RecordError.BAD_NAME),
            host=_matching(txt, "host", _HOST_RE, RecordError.BAD_HOST),
            endpoints=endpoints,
            metrics_port=int(_number(txt, "metrics", int, 0, 65535)),
            public_key=_matching(txt, "pk", _Z85_RE, RecordError.BAD_KEY),
            client_key=client_key,
            started_at=_number(txt, "t", float, 0.0, math.inf),
        )


def _endpoints(txt: Mapping[str, str]) -> dict[str, str]:
    """The record's endpoints this version knows (`ENDPOINT_PATTERNS`), each validated.

    An endpoint name it does not know is left out rather than refused, so a newer node that
    announces one more kind of endpoint stays visible to older nodes during a rolling upgrade;
    the name must still be well formed (and the TXT record as a whole stays bounded)."""
    endpoints: dict[str, str] = {}
    for key, url in txt.items():
        if not key.startswith(_EP):
            continue
        name = key[len(_EP) :]
        if not _ENDPOINT_NAME_RE.match(name):
            raise DiscoveryError(RecordError.BAD_ENDPOINT, f"name {name[:20]!r}")
        pattern = ENDPOINT_PATTERNS.get(name)
        if pattern is None:
            continue
        match = pattern.match(url)
        if not match or not 0 < int(match[2]) < 65536:
            raise DiscoveryError(RecordError.BAD_ENDPOINT, f"{name}={url!r}")
        endpoints[name] = url
    if not endpoints:
        raise DiscoveryError(RecordError.MISSING_FIELD, "no ep.* endpoint")
    return endpoints


def _decode(props: Mapping[bytes, bytes | None] | Mapping[str, str]) -> dict[str, str]:
    txt: dict[str, str] = {}
    for key, value in props.items():
        raw_key = key if isinstance(key, bytes) else key.encode()
        raw_value = b"" if value is None else value if isinstance(value, bytes) else value.encode()
        if len(raw_key) + 1 + len(raw_value) > _TXT_MAX:
            raise DiscoveryError(RecordError.TOO_LONG, f"{raw_key[:32]!r}")
        try:
            txt[raw_key.decode()] = raw_value.decode()
        except UnicodeDecodeError:
            raise DiscoveryError(RecordError.NOT_UTF8, f"{raw_key[:32]!r}") from None
    return txt


def _field(txt: Mapping[str, str], key: str) -> str:
    value = txt.get(key)
    if value is None:
        raise DiscoveryError(RecordError.MISSING_FIELD, key)
    return value


def _matching(
    txt: Mapping[str, str], key: str, pattern: re.Pattern[str], reason: RecordError
) -> str:
    value = _field(txt, key)
    if not pattern.match(value):
        raise DiscoveryError(reason, f"{key}={value[:64]!r}")
    return value


def _number(
    txt: Mapping[str, str], key: str, kind: type[int] | type[float], low: float, high: float
) -> int | float:
    raw = _field(txt, key)
    try:
        value = kind(raw)
    except ValueError:
        raise DiscoveryError(RecordError.BAD_NUMBER, f"{key}={raw[:32]!r}") from None
    if not low <= value <= high:  # NaN fails this test too
        raise DiscoveryError(RecordError.BAD_NUMBER, f"{key}={raw[:32]!r}")
    return value


def valid_endpoint(url: str) -> bool:
    """Whether `url` is a tcp://host:port endpoint a record (or a hint) may name."""
    match = _ENDPOINT_RE.match(url)
    return match is not None and 0 < int(match[2]) < 65536


def record_key(cluster_secret: bytes) -> bytes:
    """The key discovery records are signed with, from the keys dir's cluster.secret."""
    return hashlib.blake2b(b"", key=cluster_secret, person=b"soim-record", digest_size=32).digest()


def signed_txt(txt: Mapping[str, str], key: bytes) -> dict[str, str]:
    """`txt` plus its signature `sig` (HMAC-SHA256 over the sorted key=value lines)."""
    return {**txt, _SIG: _signature(txt, key)}


def signature_ok(props: Mapping[bytes, bytes | None], key: bytes) -> bool:
    """Whether raw TXT properties carry a valid `sig` made with `key`."""
    try:
        txt = _decode(props)
    except DiscoveryError:
        return False
    sig = txt.pop(_SIG, "")
    return hmac.compare_digest(sig.encode(), _signature(txt, key).encode())


def _signature(txt: Mapping[str, str], key: bytes) -> str:
    body = "\n".join(f"{k}={v}" for k, v in sorted(txt.items()) if k != _SIG)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def interface_addresses(ifaces: Sequence[str]) -> list[str]:
    """The local IPv4 addresses that `ifaces` (addresses or interface names) stand for.

    Raises ConfigError naming SOIM_DISCOVERY_IFACES for anything that is not a local IPv4
    address or the name of an interface with one; 0.0.0.0 (every interface) is refused.
    """
    adapters = ifaddr.get_adapters()
    by_name = {a.nice_name: a for a in adapters} | {a.name: a for a in adapters}
    local = {str(ip.ip) for a in adapters for ip in a.ips if ip.is_IPv4}
    found: list[str] = []
    for item in ifaces:
        if item in by_name:
            addrs = [str(ip.ip) for ip in by_name[item].ips if ip.is_IPv4]
            if not addrs:
                raise ConfigError(
                    "SOIM_DISCOVERY_IFACES", f"interface {item!r} has no IPv4 address"
                )
        else:
            try:
                addr = ipaddress.ip_address(item)
            except ValueError:
                raise ConfigError("SOIM_DISCOVERY_IFACES", f"no interface {item!r}") from None
            if addr.version != 4 or addr.is_unspecified or str(addr) not in local:
                raise ConfigError(
                    "SOIM_DISCOVERY_IFACES", f"{item!r} is not an IPv4 address of this host"
                )
            addrs = [str(addr)]
        found += [a for a in addrs if a not in found]
    return found


def instance_label(cluster: str, node_id: str) -> str:
    """The service instance label: `<cluster>-<node_id>`, made a safe DNS label (<= 63 bytes)."""
    raw = f"{cluster}-{node_id}"
    label = re.sub(r"[^A-Za-z0-9-]", "-", raw)
    if label != raw or len(label) > 63:
        label = f"{label[:54]}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"
    return label


class Discovery:
    """One node's zeroconf presence and its view of the other nodes of its cluster."""

    def __init__(
        self,
        cfg: Config,
        on_added: Callable[[NodeInfo], None],
        on_removed: Callable[[NodeInfo], None],
        on_updated: Callable[[NodeInfo], None],
        signing_key: bytes | None = None,
    ) -> None:
        """Callbacks get each record (by service name) as it appears, changes and goes. With
        `signing_key` (nodes and soimctl), only records signed with it are seen and our own
        record is signed; without it (the `soim` client) records are unchecked hints."""
        self.cfg = cfg
        self.signing_key = signing_key
        self.on_added, self.on_removed, self.on_updated = on_added, on_removed, on_updated
        self.addresses = interface_addresses(cfg.discovery_ifaces)
        self.bad_records: Counter[RecordError] = Counter()
        self._own_id = cfg.node_id
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._own: AsyncServiceInfo | None = None
        self._pending: dict[str, ServiceStateChange] = {}
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._records: dict[str, NodeInfo] = {}  # service name -> valid record, any cluster
        self._peers: dict[str, NodeInfo] = {}  # service name -> record, as callbacks saw it
        self.on_conflict: Callable[[NodeInfo], None] | None = None
        """Called (once) with an older live node's record for the name this node registered."""
        self._claims = _ClaimWatch(self)

    def records(self) -> list[NodeInfo]:
        """Every record of this cluster's other nodes, one per service name: hints of where to
        dial (several may name one node id; a client tries them all)."""
        return list(self._peers.values())

    def peers(self) -> dict[str, NodeInfo]:
        """Records of this cluster's nodes other than this one, by node id (hints: of two
        records naming one node id, either may be shown; the callbacks get both)."""
        return {r.node_id: r for r in self._peers.values()}

    async def async_start(self) -> None:
        """Open zeroconf on the discovery addresses and start browsing."""
        if self._azc is not None:
            raise RuntimeError("Discovery already started")
        self._azc = AsyncZeroconf(interfaces=list(self.addresses), ip_version=IPVersion.V4Only)
        self._pump = asyncio.ensure_future(self._run())
        self._browser = AsyncServiceBrowser(
            self._azc.zeroconf,
            SERVICE_TYPE,
            handlers=[self._on_change],
            question_type=DNSQuestionType.QM,
        )
        self._azc.zeroconf.async_add_listener(self._claims, None)

    async def async_register(self, info: NodeInfo, probe: bool = True) -> None:
        """Announce `info` once mDNS probing is done; a second call publishes the new record.

        Raises DiscoveryError if `info` is not a valid record, and zeroconf's
        NonUniqueNameException if a live node already announces this cluster and node id.
        Without `probe` (a node id with a random part, which no live node can hold) the
        record is announced at once: zeroconf's probing takes ~1.2 s (a random 150-250 ms,
        then three probes 500 ms apart).
        """
        if self._azc is None:
            raise RuntimeError("Discovery.async_start() first")
        NodeInfo.from_txt(info.to_txt())  # never publish what peers would reject
        self._own_id = info.node_id
        label = instance_label(info.cluster, info.node_id)
        txt = info.to_txt()
        if self.signing_key is not None:
            txt = signed_txt(txt, self.signing_key)
        service = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{label}.{SERVICE_TYPE}",
            port=_service_port(info),
            properties=txt,
            server=f"{label}.local.",
            addresses=[socket.inet_aton(a) for a in self._service_addresses(info)],
        )
        self._claims.claim(service, NodeInfo.from_txt(txt))
        if self._own is not None and self._own.name == service.name:
            await (await self._azc.async_update_service(service))
        else:
            await self.async_unregister()
            await self._azc.async_register_service(service, cooperating_responders=not probe)
        self._own = service

    def withdraw_silently(self) -> None:
        """Stop answering for this node's service without a goodbye: the name belongs to
        another live node (`on_conflict`), whose record peers must keep."""
        if self._azc is not None and self._own is not None:
            self._azc.zeroconf.registry.async_remove(self._own)
        self._own = None

    async def async_unregister(self) -> None:
        """Withdraw this node's service; peers see it removed at once (mDNS goodbye)."""
        if self._azc is not None and self._own is not None:
            own, self._own = self._own, None
            await (await self._azc.async_unregister_service(own))

    async def async_close(self) -> None:
        """Stop browsing, say goodbye, close zeroconf. No callback runs afterwards."""
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        await self.async_unregister()
        if self._azc is not None:
            await self._azc.async_close()
            self._azc = None

    def _service_addresses(self, info: NodeInfo) -> list[str]:
        """The service's A records: the advertised host if it is an IPv4 literal, else ours."""
        try:
            if ipaddress.ip_address(info.host).version == 4:
                return [info.host]
        except ValueError:
            pass
        return list(self.addresses)

    # ---- browsing
    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """Browser handler (event loop): remember the latest change per service, wake the pump."""
        self._pending[name] = state_change
        self._wake.set()

    async def _run(self) -> None:
        """Apply pending changes in settled batches, one batch at a time."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(timing.DISCOVERY_SETTLE_S)  # coalescing window, not a sync wait
            self._wake.clear()
            batch, self._pending = self._pending, {}
            await self._apply(batch)

    async def _apply(self, batch: Mapping[str, ServiceStateChange]) -> None:
        names = list(batch)
        records = await asyncio.gather(*(self._resolve(n, batch[n]) for n in names))
        for name, record in zip(names, records, strict=True):
            if record is None:
                self._records.pop(name, None)
            elif name in self._records or len(self._records) < timing.MAX_DISCOVERY_RECORDS:
                self._records[name] = record
            else:
                self.bad_records[RecordError.TOO_MANY] += 1
        view = {
            name: r
            for name, r in self._records.items()
            if r.cluster == self.cfg.cluster and r.node_id != self._own_id
        }
        old, self._peers = self._peers, view
        for name in old.keys() - view.keys():
            self._notify(self.on_removed, old[name])
        for name, record in view.items():
            if name not in old:
                self._notify(self.on_added, record)
            elif old[name] != record:
                self._notify(self.on_updated, record)

    async def _resolve(self, name: str, change: ServiceStateChange) -> NodeInfo | None:
        """The service's current valid record, or None (removed, unresolved, bad: counted)."""
        if change is ServiceStateChange.Removed or self._azc is None:
            return None
        service = AsyncServiceInfo(SERVICE_TYPE, name)
        timeout_ms = int(timing.DISCOVERY_RESOLVE_TIMEOUT_S * 1000)
        if not await service.async_request(
            self._azc.zeroconf, timeout_ms, question_type=DNSQuestionType.QM
        ):
            self.bad_records[RecordError.UNRESOLVED] += 1
            return None
        try:
            info = NodeInfo.from_txt(service.properties)
            if (
                self.signing_key is not None
                and info.cluster == self.cfg.cluster
                and not signature_ok(service.properties, self.signing_key)
            ):
                raise DiscoveryError(RecordError.BAD_SIGNATURE, "not signed by this cluster")
            return info
        except DiscoveryError as err:
            self.bad_records[err.reason] += 1
            log.warning("ignoring bad discovery record %s: %s", name, err)
            return None

    def _notify(self, callback: Callable[[NodeInfo], None], info: NodeInfo) -> None:
        try:
            callback(info)
        except Exception:
            log.exception("discovery callback %r failed for %s", callback, info.node_id)


class _ClaimWatch(RecordUpdateListener):
    """Watches every record zeroconf receives for an older live node's TXT under the service
    name this node registered. Zeroconf's probing hears only answers that arrive within about
    a second of its first probe; a defender stalled longer (a loaded host) answers later, and
    this catches that answer. A responder answers only for its own records, so a TXT with this
    name and another content comes from a live process; the older one keeps the name."""

    def __init__(self, discovery: Discovery) -> None:
        self._discovery = discovery
        self._name = ""
        self._service: AsyncServiceInfo | None = None  # the service registered under the name
        self._own: NodeInfo | None = None
        self._texts: set[bytes] = set()  # what this node published under the name
        self._reported = False

    def claim(self, service: AsyncServiceInfo, info: NodeInfo) -> None:
        if service.name.lower() != self._name:
            self._texts.clear()
        self._name = service.name.lower()
        self._service = service
        self._own = info
        self._texts.add(service.text)

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            record = update.new
            if (
                isinstance(record, DNSText)
                and record.ttl > 0
                and record.name.lower() == self._name
                and record.text not in self._texts
            ):
                self._check(record.text)

    def _check(self, text: bytes) -> None:
        own, service, discovery = self._own, self._service, self._discovery
        if own is None or service is None or self._reported or discovery.on_conflict is None:
            return
        props = AsyncServiceInfo(service.type, service.name, properties=text).properties
        try:
            other = NodeInfo.from_txt(props)
        except DiscoveryError:
            return
        if discovery.signing_key is None or not signature_ok(props, discovery.signing_key):
            return  # only a record signed with the cluster's key may stop this node
        if (other.cluster, other.node_id) != (own.cluster, own.node_id):
            return
        if (other.started_at, sorted(other.endpoints.items())) >= (
            own.started_at,
            sorted(own.endpoints.items()),
        ):
            return  # a younger claimant: it is the one to yield
        self._reported = True
        discovery._notify(discovery.on_conflict, other)


def _service_port(info: NodeInfo) -> int:
    """The SRV port: the node's main endpoint (client for gateways, else rpc, else the first)."""
    name = next(n for n in ("client", "rpc", *info.endpoints) if n in info.endpoints)
    return int(info.endpoints[name].rsplit(":", 1)[1])
