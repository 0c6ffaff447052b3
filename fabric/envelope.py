"""The envelope: the one encode/decode pair for every frame on every so-im socket.

Role: turn (header, payload) into ZeroMQ frames and back, validating in a fixed order. No
sockets of its own; used by the RPC client/server (DEALER/ROUTER), the events PUB/SUB and the
gateway's client ROUTER.

Frame layout (after any routing identity a ROUTER prepends, or the topic a PUB prepends):

    frame 0  MAGIC + header   b"SOIM\\x01" (protocol and version, 5 bytes) followed by the
                             serialized soim.Header (common.proto): kind, request_id, method,
                             deadline_ms, error, detail, sender
    frame 1  payload         the serialized request/reply/event message named by `method`
                             (empty on an error reply)

Two frames, not three: every frame costs a send and a receive at every hop.

Validation order in `decode`: frame count → size → magic → header parse → header schema checks
(kind known; request_id set on requests and replies — an error reply to a request whose header
did not parse carries request_id 0; method set on requests and events;
deadline set on requests). The payload is parsed by `parse_payload` once the method (and so the
message type) is known. Every failure is an `EnvelopeError` carrying one `DecodeError` of a
closed set, which maps to a wire `ErrorCode` with `error_code()`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message

from schema import common_pb2 as pb

MAGIC = b"SOIM\x01"
N_FRAMES = 2
_MAGIC_LEN = len(MAGIC)
_KINDS = frozenset(pb.Kind.values()) - {pb.KIND_UNSPECIFIED}
M = TypeVar("M", bound=Message)


class DecodeError(enum.Enum):
    """Why a frame was refused. Closed: nothing else can come out of `decode`."""

    FRAME_COUNT = "frame_count"
    TOO_LARGE = "too_large"
    BAD_MAGIC = "bad_magic"
    BAD_HEADER = "bad_header"
    BAD_KIND = "bad_kind"
    MISSING_FIELD = "missing_field"
    BAD_PAYLOAD = "bad_payload"

    def error_code(self) -> int:
        """The wire ErrorCode a peer is told for this failure."""
        if self is DecodeError.TOO_LARGE:
            return pb.TOO_LARGE
        if self is DecodeError.BAD_PAYLOAD:
            return pb.BAD_REQUEST
        return pb.BAD_FRAME


class EnvelopeError(Exception):
    """A frame failed validation; `reason` says which step, `header` is set when it parsed."""

    def __init__(self, reason: DecodeError, detail: str = "", header: pb.Header | None = None):
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        self.header = header


@dataclass(slots=True)
class Envelope:
    """A decoded frame: its header and the still-serialized payload."""

    header: pb.Header
    payload: bytes


def encode(header: pb.Header, payload: bytes = b"") -> list[bytes]:
    """Frames for `header` and `payload` (the caller prepends identity or topic)."""
    return [MAGIC + header.SerializeToString(), payload]


def request(method: str, request_id: int, deadline_ms: int, payload: bytes,
            sender: str = "") -> list[bytes]:
    """Frames of a REQUEST."""
    return [MAGIC + pb.Header(kind=pb.REQUEST, request_id=request_id, method=method,
                              deadline_ms=deadline_ms, sender=sender).SerializeToString(), payload]


def reply(request_id: int, payload: bytes, method: str = "", sender: str = "") -> list[bytes]:
    """Frames of a successful REPLY."""
    return [MAGIC + pb.Header(kind=pb.REPLY, request_id=request_id, method=method,
                              sender=sender).SerializeToString(), payload]


def error_reply(request_id: int, code: int, detail: str = "", method: str = "",
                sender: str = "") -> list[bytes]:
    """Frames of an error REPLY: no payload, just the code and a short safe detail."""
    header = pb.Header(kind=pb.REPLY, request_id=request_id, method=method, error=code,
                       detail=detail[:200], sender=sender)
    return [MAGIC + header.SerializeToString(), b""]


def event(method: str, payload: bytes, sender: str = "") -> list[bytes]:
    """Frames of an EVENT (PUB/SUB or a push to a client)."""
    return [MAGIC + pb.Header(kind=pb.EVENT, method=method, sender=sender).SerializeToString(),
            payload]


def decode(frames: Sequence[bytes], max_bytes: int) -> Envelope:
    """Validate and decode the envelope frames (identity/topic already removed)."""
    if len(frames) != N_FRAMES:
        raise EnvelopeError(DecodeError.FRAME_COUNT, f"{len(frames)} frames")
    head, payload = frames
    if len(head) + len(payload) > max_bytes:
        raise EnvelopeError(DecodeError.TOO_LARGE, f"{len(head) + len(payload)} bytes")
    if head[:_MAGIC_LEN] != MAGIC:
        raise EnvelopeError(DecodeError.BAD_MAGIC)
    header = pb.Header()
    try:
        header.ParseFromString(head[_MAGIC_LEN:])
    except (_PbDecodeError, ValueError) as err:  # ValueError: invalid UTF-8 in a string
        raise EnvelopeError(DecodeError.BAD_HEADER, type(err).__name__) from None
    kind = header.kind
    if kind not in _KINDS:
        raise EnvelopeError(DecodeError.BAD_KIND, str(kind), header)
    if not header.request_id and (kind == pb.REQUEST or (kind == pb.REPLY and not header.error)):
        raise EnvelopeError(DecodeError.MISSING_FIELD, "request_id", header)
    if kind != pb.REPLY and not header.method:
        raise EnvelopeError(DecodeError.MISSING_FIELD, "method", header)
    if kind == pb.REQUEST and header.deadline_ms <= 0:
        raise EnvelopeError(DecodeError.MISSING_FIELD, "deadline_ms", header)
    return Envelope(header, bytes(payload))


def parse_payload(msg_type: type[M], payload: bytes, header: pb.Header | None = None) -> M:
    """Parse `payload` as `msg_type`; a bad payload is an EnvelopeError(BAD_PAYLOAD)."""
    msg = msg_type()
    try:
        msg.ParseFromString(payload)
    except (_PbDecodeError, ValueError) as err:
        raise EnvelopeError(DecodeError.BAD_PAYLOAD, type(err).__name__, header) from None
    return msg
