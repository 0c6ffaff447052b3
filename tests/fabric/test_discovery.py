"""Zeroconf discovery over real multicast on 127.0.0.1: seeing peers, cluster isolation, goodbyes,
bad records; plus TXT validation and interface resolution."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import zmq
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from fabric.config import Config, ConfigError
from fabric.discovery import (
    SERVICE_TYPE,
    Discovery,
    DiscoveryError,
    NodeInfo,
    RecordError,
    instance_label,
    interface_addresses,
    record_key,
    signed_txt,
)
from tests.support import async_wait_until

SEE_EACH_OTHER_S = 3.0
GOODBYE_S = 1.5


def info(cluster: str, node_id: str, role: str = "router", port: int = 5555) -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        role=role,
        cluster=cluster,
        version="0.1.0",
        host="127.0.0.1",
        endpoints={"rpc": f"tcp://127.0.0.1:{port}", "events": f"tcp://127.0.0.1:{port + 1}"},
        metrics_port=9100,
        public_key=zmq.curve_keypair()[0].decode(),
        client_key="",
        started_at=time.time(),
    )


class Seen:
    """A Discovery with the events its callbacks received (each checked to run on the loop)."""

    def __init__(self, cluster: str, node_id: str) -> None:
        self.events: list[tuple[str, NodeInfo]] = []
        self.node_id = node_id
        self.discovery = Discovery(
            Config(cluster=cluster, node_id=node_id),
            self._cb("added"),
            self._cb("removed"),
            self._cb("updated"),
        )

    def _cb(self, kind: str) -> Any:
        def record(node: NodeInfo) -> None:
            asyncio.get_running_loop()  # raises unless called on the event loop
            self.events.append((kind, node))

        return record

    def kinds(self, node_id: str) -> list[str]:
        return [kind for kind, node in self.events if node.node_id == node_id]


def run(scenario: Coroutine[Any, Any, None]) -> None:
    """Run an async scenario; it must leave no thread behind (zeroconf closed)."""
    before = set(threading.enumerate())
    asyncio.run(scenario)
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads left running: {left}"


async def started(*nodes: Seen) -> None:
    await asyncio.gather(*(n.discovery.async_start() for n in nodes))


async def closed(*nodes: Seen) -> None:
    await asyncio.gather(*(n.discovery.async_close() for n in nodes))


def test_txt_record_round_trip() -> None:
    node = info("c1", "router-1")
    assert NodeInfo.from_txt(node.to_txt()) == node
    wire = {k.encode(): v.encode() for k, v in node.to_txt().items()}
    assert NodeInfo.from_txt(wire) == node
    gateway = dataclasses.replace(
        node, endpoints={**node.endpoints, "web": "wss://127.0.0.1:8443/ws"}
    )  # a gateway's WebSocket plane
    assert NodeInfo.from_txt(gateway.to_txt()) == gateway


def test_an_endpoint_this_version_does_not_know_is_left_out_not_refused() -> None:
    """A newer node announcing one more kind of endpoint stays visible to older nodes (a
    rolling upgrade); the unknown endpoint is simply not part of the view."""
    node = info("c1", "n1")
    txt = {**node.to_txt(), "ep.mqtt": "mqtt://127.0.0.1:1883", "ep.h3": "https://x/y"}
    assert NodeInfo.from_txt(txt) == node
    only_unknown = {k: v for k, v in txt.items() if k not in ("ep.rpc", "ep.events")}
    with pytest.raises(DiscoveryError) as caught:
        NodeInfo.from_txt(only_unknown)
    assert caught.value.reason is RecordError.MISSING_FIELD


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"role": "wizard"}, RecordError.BAD_ROLE),
        ({"id": "no spaces"}, RecordError.BAD_NAME),
        ({"txtvers": "9"}, RecordError.BAD_TXT_VERSION),
        ({"ep.rpc": "udp://127.0.0.1:1"}, RecordError.BAD_ENDPOINT),
        ({"ep.rpc": "tcp://127.0.0.1:70000"}, RecordError.BAD_ENDPOINT),
        ({"ep.web": "tcp://127.0.0.1:8080"}, RecordError.BAD_ENDPOINT),
        ({"ep.web": "ws://127.0.0.1:8080/other"}, RecordError.BAD_ENDPOINT),
        ({"ep.rpc": "ws://127.0.0.1:8080/ws"}, RecordError.BAD_ENDPOINT),
        ({"ep.Bad Name": "tcp://127.0.0.1:1"}, RecordError.BAD_ENDPOINT),
        ({"metrics": "many"}, RecordError.BAD_NUMBER),
        ({"t": "nan"}, RecordError.BAD_NUMBER),
        ({"pk": "short"}, RecordError.BAD_KEY),
        ({"ck": "x" * 39}, RecordError.BAD_KEY),
        ({"host": "x" * 251}, RecordError.TOO_LONG),
        ({"cluster": None}, RecordError.MISSING_FIELD),
    ],
)
def test_bad_txt_records_raise_a_closed_error(
    change: dict[str, str | None], reason: RecordError
) -> None:
    txt: dict[bytes, bytes | None] = {
        k.encode(): v.encode() for k, v in info("c1", "n1").to_txt().items()
    }
    for key, value in change.items():
        if value is None:
            del txt[key.encode()]
        else:
            txt[key.encode()] = value.encode()
    with pytest.raises(DiscoveryError) as caught:
        NodeInfo.from_txt(txt)
    assert caught.value.reason is reason


def test_non_utf8_txt_is_a_closed_error() -> None:
    txt = {k.encode(): v.encode() for k, v in info("c1", "n1").to_txt().items()}
    txt[b"id"] = b"\xff\xfe"
    with pytest.raises(DiscoveryError) as caught:
        NodeInfo.from_txt(txt)
    assert caught.value.reason is RecordError.NOT_UTF8


def test_instance_label_is_a_dns_label() -> None:
    assert instance_label("soim", "router-1") == "soim-router-1"
    odd = instance_label("c" * 63, "node.with.dots")
    assert len(odd) <= 63 and "." not in odd
    assert odd != instance_label("c" * 63, "node-with-dots")


def test_interfaces_resolve_to_local_ipv4_only() -> None:
    assert interface_addresses(["127.0.0.1"]) == ["127.0.0.1"]
    assert interface_addresses(["lo", "127.0.0.1"]) == ["127.0.0.1"]
    for bad in ("0.0.0.0", "::1", "no-such-if0", "192.0.2.254"):
        with pytest.raises(ConfigError, match=r"^SOIM_DISCOVERY_IFACES: "):
            interface_addresses([bad])


def test_nodes_of_one_cluster_see_each_other_and_no_other(cluster_name: str) -> None:
    async def scenario() -> None:
        other = f"{cluster_name}x"
        a, b = Seen(cluster_name, "router-a"), Seen(cluster_name, "gateway-b")
        c, d = Seen(other, "router-c"), Seen(other, "router-d")
        await started(a, b, c, d)
        try:
            t0 = time.monotonic()
            await asyncio.gather(
                a.discovery.async_register(info(cluster_name, "router-a", port=6000)),
                b.discovery.async_register(info(cluster_name, "gateway-b", "gateway", 6100)),
                c.discovery.async_register(info(other, "router-c")),
                d.discovery.async_register(info(other, "router-d")),
            )
            await async_wait_until(
                lambda: (
                    set(a.discovery.peers()) == {"gateway-b"}
                    and set(b.discovery.peers()) == {"router-a"}
                    and set(c.discovery.peers()) == {"router-d"}
                    and set(d.discovery.peers()) == {"router-c"}
                ),
                timeout=SEE_EACH_OTHER_S - (time.monotonic() - t0),
                what="mutual discovery",
            )
            seen_b = a.discovery.peers()["gateway-b"]
            assert seen_b.role == "gateway"
            assert seen_b.endpoints == {
                "rpc": "tcp://127.0.0.1:6100",
                "events": "tcp://127.0.0.1:6101",
            }
            assert a.kinds("gateway-b") == ["added"]
            assert not any(n.cluster == other for _, n in a.events + b.events)
        finally:
            await closed(a, b, c, d)

    run(scenario())


def test_goodbye_and_update_are_seen_promptly(cluster_name: str) -> None:
    async def scenario() -> None:
        a, b = Seen(cluster_name, "router-a"), Seen(cluster_name, "router-b")
        await started(a, b)
        try:
            await asyncio.gather(
                a.discovery.async_register(info(cluster_name, "router-a")),
                b.discovery.async_register(info(cluster_name, "router-b")),
            )
            await async_wait_until(
                lambda: "router-b" in a.discovery.peers(), timeout=SEE_EACH_OTHER_S, what="a sees b"
            )
            await b.discovery.async_register(info(cluster_name, "router-b", port=7100))
            await async_wait_until(
                lambda: a.kinds("router-b") == ["added", "updated"],
                timeout=GOODBYE_S,
                what="a sees b's new record",
            )
            assert a.discovery.peers()["router-b"].endpoints["rpc"] == "tcp://127.0.0.1:7100"
            await b.discovery.async_unregister()
            await async_wait_until(
                lambda: "router-b" not in a.discovery.peers(),
                timeout=GOODBYE_S,
                what="a sees b's goodbye",
            )
            assert a.kinds("router-b") == ["added", "updated", "removed"]
        finally:
            await closed(a, b)

    run(scenario())


def test_malformed_record_is_ignored_and_counted(cluster_name: str) -> None:
    async def scenario() -> None:
        a, b = Seen(cluster_name, "router-a"), Seen(cluster_name, "router-b")
        rogue = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        bad = info(cluster_name, "rogue").to_txt() | {"role": "wizard"}
        service = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{cluster_name}-rogue.{SERVICE_TYPE}",
            port=1,
            properties=bad,
            server=f"{cluster_name}-rogue.local.",
            addresses=[socket.inet_aton("127.0.0.1")],
        )
        await started(a)
        try:
            await rogue.async_register_service(service)
            await async_wait_until(
                lambda: a.discovery.bad_records[RecordError.BAD_ROLE] >= 1,
                timeout=SEE_EACH_OTHER_S,
                what="bad record counted",
            )
            assert a.discovery.peers() == {} and a.events == []
            await started(b)  # the browser still works after the bad record
            await b.discovery.async_register(info(cluster_name, "router-b"))
            await async_wait_until(
                lambda: "router-b" in a.discovery.peers(), timeout=SEE_EACH_OTHER_S, what="a sees b"
            )
            assert set(a.discovery.peers()) == {"router-b"}
        finally:
            await closed(a, b)
            await rogue.async_close()

    run(scenario())


def test_multicast_stays_on_loopback(cluster_name: str) -> None:
    """By default zeroconf joins the mDNS group on lo only (per /proc/net/igmp)."""

    async def scenario() -> None:
        a = Seen(cluster_name, "router-a")
        await started(a)
        try:
            assert mdns_group_devices() == {"lo"}
        finally:
            await closed(a)

    run(scenario())


def mdns_group_devices() -> set[str]:
    """Devices on which some socket of this host joined 224.0.0.251 (FB0000E0 in the table)."""
    devices, device = set(), ""
    for line in Path("/proc/net/igmp").read_text().splitlines()[1:]:
        if not line[:1].isspace():
            device = line.split()[1]
        elif line.split()[0] == "FB0000E0":
            devices.add(device)
    return devices


def test_signed_records_and_a_second_record_for_one_node_id(cluster_name: str) -> None:
    """With a signing key, an unsigned record is dropped and counted; a record reusing a live
    node id under another service name is kept beside the first (neither hides the other)."""
    key = record_key(b"s" * 32)

    async def scenario() -> None:
        a, b = Seen(cluster_name, "router-a"), Seen(cluster_name, "router-b")
        a.discovery.signing_key = b.discovery.signing_key = key
        rogue = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        await started(a, b)
        try:
            await b.discovery.async_register(info(cluster_name, "router-b"))
            await async_wait_until(
                lambda: "router-b" in a.discovery.peers(),
                timeout=SEE_EACH_OTHER_S,
                what="a sees b's signed record",
            )
            for label, sign in (("unsigned", False), ("signed", True)):
                txt = info(cluster_name, "router-b", port=7200).to_txt()
                service = AsyncServiceInfo(
                    SERVICE_TYPE,
                    f"{cluster_name}-{label}.{SERVICE_TYPE}",
                    port=7200,
                    properties=signed_txt(txt, key) if sign else txt,
                    server=f"{cluster_name}-{label}.local.",
                    addresses=[socket.inet_aton("127.0.0.1")],
                )
                await rogue.async_register_service(service)
            await async_wait_until(
                lambda: (
                    len(a.discovery.records()) == 2
                    and a.discovery.bad_records[RecordError.BAD_SIGNATURE] >= 1
                ),
                timeout=SEE_EACH_OTHER_S,
                what="both signed records kept, the unsigned dropped",
            )
            ports = sorted(r.endpoints["rpc"] for r in a.discovery.records())
            assert ports == ["tcp://127.0.0.1:5555", "tcp://127.0.0.1:7200"]
        finally:
            await closed(a, b)
            await rogue.async_close()

    run(scenario())


def test_a_live_nodes_late_answer_for_ones_own_name_is_a_conflict(cluster_name: str) -> None:
    """mDNS probing hears only answers within about a second of its first probe; a live node
    stalled longer answers after the newcomer announced. The newcomer (here announced without
    probing, as if probing had missed the stalled node) hears that answer and is told the
    older node holds its id; the older node, hearing the newcomer, is told nothing."""
    key = record_key(b"s" * 32)

    async def scenario() -> None:
        live, twin = Seen(cluster_name, "router-x"), Seen(cluster_name, "router-x")
        conflicts: dict[str, list[NodeInfo]] = {"live": [], "twin": []}
        for name, seen in (("live", live), ("twin", twin)):
            seen.discovery.signing_key = key
            seen.discovery.on_conflict = conflicts[name].append
        older = info(cluster_name, "router-x", port=7300)
        try:
            await started(live)
            await live.discovery.async_register(older)
            await started(twin)
            await twin.discovery.async_register(info(cluster_name, "router-x"), probe=False)
            await async_wait_until(
                lambda: conflicts["twin"], timeout=SEE_EACH_OTHER_S, what="the twin told"
            )
            assert conflicts["twin"] == [older]
            twin.discovery.withdraw_silently()
            assert conflicts["live"] == []
        finally:
            await closed(live, twin)

    run(scenario())
