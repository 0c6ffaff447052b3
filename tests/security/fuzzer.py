"""Hostile frames for the fuzz tests of both planes, the pipe that fires them, and the checks
that the nodes survived.

Role: `FrameFactory` makes one multipart message at a time from a seeded RNG: valid requests
of a method table (random field values from the protobuf descriptors, biased towards edge
values and ids the cluster really uses) and mutations of them — bit flips, truncations,
extensions, wrong kinds, header lengths past the end, random method names, random payloads
under a valid header, many frames, empty frames, oversized frames — plus pure random bytes.
`Blaster` sends them fast over several sync DEALERs (pipelined, NOBLOCK, waiting on POLLOUT
when a high-water mark is hit, reading replies as it goes). `NodeWatch` samples a node
process's RSS and checks the node logs. Peer sockets: the Blaster's DEALERs (Curve clients,
keys set by the caller) to a node's ROUTER.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import zmq
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from fabric import envelope
from fabric.methods import Method
from schema import common_pb2 as pb
from tests.processes import NodeProcess

SEED_ENV = "SOIM_FUZZ_SEED"
READ_EVERY = 64
"""Sends between two reads of the replies (a fuzzer that never reads is another test)."""
_F = FieldDescriptor
_INT_EDGES = {
    _F.CPPTYPE_INT32: (0, 1, -1, 2**31 - 1, -(2**31)),
    _F.CPPTYPE_INT64: (0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)),
    _F.CPPTYPE_UINT32: (0, 1, 2**31, 2**32 - 1),
    _F.CPPTYPE_UINT64: (0, 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1),
}
_INT_RANGE = {
    _F.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    _F.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    _F.CPPTYPE_UINT32: (0, 2**32 - 1),
    _F.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_STRINGS = (
    "",
    "a",
    "alice",
    "x" * 33,
    "y" * 5000,
    "é☃\u202e名字",
    "\x00\x01",
    "a b",
    "client.Login",
    "../../etc/passwd",
    "%s%n",
    "'; DROP TABLE account; --",
)


def _integers(msg: Message) -> Iterator[int]:
    """Every integer field value in `msg` and the messages nested in it."""
    for field, value in msg.ListFields():
        values = value if field.is_repeated else [value]
        if field.cpp_type == _F.CPPTYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                continue  # the one map (NodeInfo.endpoints) holds strings
            for nested in values:
                yield from _integers(nested)
        elif field.cpp_type in _INT_RANGE:
            yield from values


def seed_from_env() -> int:
    """The run's seed: $SOIM_FUZZ_SEED, or a fresh one (printed by the caller for replay)."""
    given = os.environ.get(SEED_ENV, "").strip()
    return int(given) if given else random.SystemRandom().randrange(2**32)


class FrameFactory:
    """Random and mutated envelopes for one method table; `ids` and `strings` are values worth
    trying (real user, conversation and group ids, tokens); no integer field ever gets a value
    in `avoid`."""

    def __init__(
        self,
        rng: random.Random,
        methods: Sequence[Method],
        ids: Sequence[int],
        max_bytes: int,
        oversized: bool = True,
        strings: Sequence[str] = (),
        avoid: frozenset[int] = frozenset(),
    ) -> None:
        self.rng = rng
        self.methods = list(methods)
        self.ids = [i for i in ids if i not in avoid] or [1]
        self.strings = (*_STRINGS, *strings)
        self.avoid = avoid
        self._by_name = {m.name: m for m in self.methods}
        self.max_bytes = max_bytes
        self.request_id = 0
        self.kinds: Counter[str] = Counter()
        strategies: list[tuple[Callable[[], list[bytes]], int]] = [
            (self.valid, 30),
            (self.flipped, 15),
            (self.truncated, 8),
            (self.extended, 6),
            (self.random_payload, 10),
            (self.wrong_kind, 5),
            (self.header_length, 4),
            (self.random_method, 5),
            (self.bad_deadline, 4),
            (self.many_frames, 3),
            (self.empty_frames, 2),
            (self.random_bytes, 8),
        ]
        if oversized:
            strategies.append((self.oversized, 1))
        self._strategies = [s for s, _ in strategies]
        self._weights = [w for _, w in strategies]

    def message(self) -> list[bytes]:
        """One multipart message of a randomly chosen kind that names no id in `avoid`.

        A mutation (a flipped bit, random payload bytes) can turn any integer into an avoided
        id, so each message is decoded as its node would decode it and drawn again if it
        does."""
        while True:
            strategy = self.rng.choices(self._strategies, self._weights)[0]
            frames = strategy()
            if not self.avoid or not self._names_avoided(frames):
                self.kinds[strategy.__name__] += 1
                return frames

    def _names_avoided(self, frames: list[bytes]) -> bool:
        """Would a node that decodes `frames` as a request see an id in `avoid`?"""
        if len(frames) != 1:
            return False  # refused for its frame count
        try:
            header, payload = envelope.decode_frame(frames[0], len(frames[0]))
            method = self._by_name.get(header.method)
            if method is None or header.kind != pb.REQUEST:
                return False
            request = envelope.parse_payload(method.request, payload)
        except envelope.EnvelopeError:
            return False
        return any(value in self.avoid for value in _integers(request))

    # ---- building blocks
    def _rid(self) -> int:
        self.request_id += 1
        return self.request_id

    def _deadline(self) -> int:
        return int(time.time() * 1000) + 5_000

    def _request(self) -> tuple[Method, bytes]:
        method = self.rng.choice(self.methods)
        return method, self.random_message(method.request.DESCRIPTOR).SerializeToString()

    def _frame(
        self,
        method: str,
        payload: bytes,
        kind: int = pb.REQUEST,
        deadline_ms: int | None = None,
        request_id: int | None = None,
    ) -> bytes:
        header = pb.Header(
            kind=kind,
            request_id=self._rid() if request_id is None else request_id,
            method=method,
            deadline_ms=self._deadline() if deadline_ms is None else deadline_ms,
        )
        return envelope.frame(header.SerializeToString(), payload)

    def _valid_frame(self) -> bytes:
        method, payload = self._request()
        return self._frame(method.name, payload)

    def random_message(self, desc: Descriptor, depth: int = 0) -> Message:
        """A message of type `desc` with random values in some of its fields."""
        msg = GetMessageClass(desc)()
        for field in desc.fields:
            if self.rng.random() < 0.25:
                continue
            if field.is_repeated:
                if field.message_type is not None and field.message_type.GetOptions().map_entry:
                    continue  # no maps in the request types worth the code
                for _ in range(self.rng.choice((0, 1, 2, 3, 40)) if depth < 2 else 1):
                    if field.cpp_type == _F.CPPTYPE_MESSAGE:
                        getattr(msg, field.name).add().CopyFrom(
                            self.random_message(field.message_type, depth + 1)
                        )
                    else:
                        getattr(msg, field.name).append(self._scalar(field))
            elif field.cpp_type == _F.CPPTYPE_MESSAGE:
                if depth < 3:
                    getattr(msg, field.name).CopyFrom(
                        self.random_message(field.message_type, depth + 1)
                    )
            else:
                setattr(msg, field.name, self._scalar(field))
        return msg

    def _scalar(self, field: FieldDescriptor) -> object:
        rng, cpp = self.rng, field.cpp_type
        if cpp in _INT_EDGES:
            lo, hi = _INT_RANGE[cpp]
            roll = rng.random()
            if roll < 0.4:
                value = rng.choice(self.ids)
            elif roll < 0.7:
                value = rng.choice(_INT_EDGES[cpp])
            else:
                value = rng.randint(0, 1000)
            while value in self.avoid:  # ids the test keeps out of reach (e.g. its chatters)
                value = rng.randint(10**6, 10**7)
            return min(max(value, lo), hi)
        if cpp == _F.CPPTYPE_STRING:
            if field.type == _F.TYPE_BYTES:
                return rng.randbytes(rng.choice((0, 1, 16, 32, 200)))
            roll = rng.random()
            if roll < 0.5:
                return rng.choice(self.strings)
            return "".join(
                chr(rng.choice((rng.randint(32, 126), rng.randint(0x80, 0xD7FF))))
                for _ in range(rng.randint(1, 40))
            )
        if cpp == _F.CPPTYPE_BOOL:
            return rng.random() < 0.5
        if cpp == _F.CPPTYPE_ENUM:
            values = [v.number for v in field.enum_type.values]
            return rng.choice([*values, 99, -1])
        if cpp in (_F.CPPTYPE_DOUBLE, _F.CPPTYPE_FLOAT):
            return rng.choice(
                (0.0, -1.0, 1e300 if cpp == _F.CPPTYPE_DOUBLE else 1e30, float("nan"), float("inf"))
            )
        raise AssertionError(f"unhandled field type {field.full_name}")

    # ---- strategies (each returns one multipart message)
    def valid(self) -> list[bytes]:
        return [self._valid_frame()]

    def flipped(self) -> list[bytes]:
        data = bytearray(self._valid_frame())
        for _ in range(self.rng.randint(1, 8)):
            bit = self.rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
        return [bytes(data)]

    def truncated(self) -> list[bytes]:
        data = self._valid_frame()
        return [data[: self.rng.randrange(len(data))]]

    def extended(self) -> list[bytes]:
        return [self._valid_frame() + self.rng.randbytes(self.rng.randint(1, 300))]

    def random_payload(self) -> list[bytes]:
        method = self.rng.choice(self.methods)
        return [self._frame(method.name, self.rng.randbytes(self.rng.randint(0, 400)))]

    def wrong_kind(self) -> list[bytes]:
        method, payload = self._request()
        kind = self.rng.choice((pb.KIND_UNSPECIFIED, pb.REPLY, pb.EVENT, 4, 99, -5))
        return [
            self._frame(
                method.name, payload, kind=kind, request_id=self.rng.choice((0, self._rid()))
            )
        ]

    def header_length(self) -> list[bytes]:
        data = bytearray(self._valid_frame())
        length = self.rng.choice((0, 1, 0xFFFF, len(data), self.rng.randrange(0x10000)))
        data[5:7] = length.to_bytes(2, "big")
        return [bytes(data)]

    def random_method(self) -> list[bytes]:
        _, payload = self._request()
        name = self.rng.choice(
            (
                "",
                ".",
                "client.",
                "node.Drainage",
                "fabric.Status",
                "directory.Login",
                self.rng.choice(self.methods).name.upper(),
                "".join(chr(self.rng.randint(33, 0x2FF)) for _ in range(self.rng.randint(1, 60))),
            )
        )
        return [self._frame(name, payload)]

    def bad_deadline(self) -> list[bytes]:
        method, payload = self._request()
        deadline = self.rng.choice((0, -1, 1, 2**63 - 1, -(2**63), self._deadline() - 60_000))
        return [self._frame(method.name, payload, deadline_ms=deadline)]

    def many_frames(self) -> list[bytes]:
        count = self.rng.choice((2, 3, 10, 100))
        return [
            self.rng.choice((self._valid_frame(), b"", self.rng.randbytes(20)))
            for _ in range(count)
        ]

    def empty_frames(self) -> list[bytes]:
        return [b""] * self.rng.randint(1, 4)

    def random_bytes(self) -> list[bytes]:
        return [self.rng.randbytes(self.rng.choice((1, 4, 7, 30, 200, 1000)))]

    def oversized(self) -> list[bytes]:
        method = self.rng.choice(self.methods)
        return [
            self._frame(method.name, self.rng.randbytes(self.max_bytes + self.rng.randint(1, 1024)))
        ]


class Blaster:
    """Several DEALERs to one endpoint, fed round robin without waiting for replies.

    `setup(sock)` puts the keys on a fresh socket before it connects. A socket that stays
    blocked (its high-water mark reached) for `STALL_S` is replaced by a fresh one, so a server
    that drops a connection cannot stop the run. Replies are counted by error code.
    """

    STALL_S = 1.0

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        setup: Callable[[zmq.Socket], None],
        connections: int,
        on_open: Callable[[zmq.Socket, int], None] | None = None,
    ) -> None:
        self.ctx, self.endpoint, self.setup, self.on_open = ctx, endpoint, setup, on_open
        self.socks = [self._open(i) for i in range(connections)]
        self.sent = 0
        self.replaced = 0
        self.replies: Counter[str] = Counter()

    def _open(self, i: int) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = sock.rcvhwm = 1000
        self.setup(sock)
        sock.connect(self.endpoint)
        if self.on_open is not None:
            self.on_open(sock, i)
        return sock

    def send(self, frames: list[bytes], i: int) -> None:
        """Queue `frames` on connection `i` (mod the count); returns once queued."""
        i %= len(self.socks)
        if self.sent % READ_EVERY == 0:
            self.read_replies()
        stalled_at = None
        while True:
            try:
                self.socks[i].send_multipart(frames, zmq.NOBLOCK)
                self.sent += 1
                return
            except zmq.Again:
                self.read_replies()
                now = time.monotonic()
                stalled_at = stalled_at or now
                if now - stalled_at > self.STALL_S:
                    self.socks[i].close(0)
                    self.socks[i] = self._open(i)
                    self.replaced += 1
                    stalled_at = now
                self.socks[i].poll(50, zmq.POLLOUT)

    def read_replies(self) -> None:
        """Read every reply that is waiting, counting them by error code."""
        for sock in self.socks:
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    header, _ = envelope.decode_frame(frames[-1], 1 << 24)
                except envelope.EnvelopeError as err:
                    self.replies[f"undecodable {err.reason.value}"] += 1
                    continue
                self.replies[
                    pb.ErrorCode.Name(header.error)
                    if header.error in pb.ErrorCode.values()
                    else "?"
                ] += 1

    def close(self) -> None:
        self.read_replies()
        for sock in self.socks:
            sock.close(0)


class NodeWatch:
    """RSS of a node process (Linux /proc), sampled as often as the test asks."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = self.rss()
        self.peak = self.baseline

    def rss(self) -> int:
        """Resident set size in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def sample(self) -> int:
        now = self.rss()
        self.peak = max(self.peak, now)
        return now


def tracebacks(log: str) -> Counter[str]:
    """Distinct tracebacks in a node log, as "<the line before it> ... <its last line>"."""
    found: Counter[str] = Counter()
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = i + 1
            while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end]):
                end += 1
            last = lines[end] if end < len(lines) else "?"
            before = lines[i - 1].split(" ", 3)[-1] if i else ""
            found[f"{before} ... {last}"] += 1
    return found


def assert_nodes_healthy(nodes: Sequence[NodeProcess]) -> None:
    """Every node process still runs and none has logged a traceback."""
    problems = []
    for node in nodes:
        code = node.proc.poll()
        log = node.log()
        if code is not None:
            problems.append(f"{node.node_id} exited with {code}:\n{log[-3000:]}")
        elif "Traceback" in log:
            at = log.index("Traceback")
            kinds = "\n  ".join(f"{n} x {what}" for what, n in tracebacks(log).most_common())
            problems.append(
                f"{node.node_id} logged tracebacks:\n  {kinds}\nthe first:\n{log[at : at + 3000]}"
            )
    assert not problems, "\n\n".join(problems)
