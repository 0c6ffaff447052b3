"""The envelope: the one encode/decode pair for every frame on every so-im socket.

Role: turn (header, payload) into a ZeroMQ frame and back, validating in a fixed order. No
sockets of its own; used by the RPC client/server (DEALER/ROUTER), the events PUB/SUB and the
gateway's client ROUTER.

Frame layout (after any routing identity a ROUTER prepends, or the topic a PUB prepends), one
frame:

    bytes 0-4    MAGIC       b"SOIM\\x02": protocol and layout version
    bytes 5-6    header_len  length of the header, unsigned big-endian (so at most 65,535)
    next         header      header_len bytes: the serialized soim.Header (common.proto): kind,
                             request_id, method, deadline_ms, error, detail, sender
    the rest     payload     the serialized request/reply/event message named by `method`
                             (empty on an error reply)

One frame, not two: every frame costs a send, a receive and (under Curve) an encryption at every
hop.

Validation order in `decode` (`decode_frame` is the same after the frame count, for callers that
counted the frames themselves): frame count → size → magic → header length → header parse →
header schema checks (kind known; request_id set on requests and replies — an error reply to a
request whose header did not parse carries request_id 0; method set on requests and events;
deadline set on requests). The payload is parsed by `parse_payload` once the method (and so the
message type) is known. Every failure is an `EnvelopeError` carrying one `DecodeError` of a
closed set, which maps to a wire `ErrorCode` with `error_code()`.

The module functions build frames for any header; an `Encoder` builds the hot ones (requests and
plain replies) by reusing a Header per method instead of constructing one per frame.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message

from schema import common_pb2 as pb

MAGIC = b"SOIM\x02"
N_FRAMES = 1
_PREFIX = struct.Struct(f">{len(MAGIC)}sH")  # MAGIC, header_len
_HEADER_AT = _PREFIX.size
_PREFIXES = tuple(_PREFIX.pack(MAGIC, n) for n in range(256))
"""The prefix of every header shorter than 256 bytes (all but odd error details), prebuilt."""
_MAGIC_LEN = len(MAGIC)
_HEADER_ENDS = {prefix: _HEADER_AT + n for n, prefix in enumerate(_PREFIXES)}
"""Where the header ends, by the frame's first `_HEADER_AT` bytes, for the prebuilt prefixes: one
lookup checks the magic and reads the length."""
_KINDS = frozenset(pb.Kind.values()) - {pb.KIND_UNSPECIFIED}
_ERROR_CODES = frozenset(pb.ErrorCode.values())
_REQUEST, _REPLY = pb.REQUEST, pb.REPLY
_parse_header = pb.Header.FromString
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


def frame(header: bytes, payload: bytes) -> bytes:
    """The frame for an already serialized header and payload."""
    n = len(header)
    return b"".join((_PREFIXES[n] if n < 256 else _PREFIX.pack(MAGIC, n), header, payload))


def encode(header: pb.Header, payload: bytes = b"") -> list[bytes]:
    """Frames for `header` and `payload` (the caller prepends identity or topic)."""
    return [frame(header.SerializeToString(), payload)]


def request(
    method: str, request_id: int, deadline_ms: int, payload: bytes, sender: str = ""
) -> list[bytes]:
    """Frames of a REQUEST."""
    return encode(
        pb.Header(
            kind=pb.REQUEST,
            request_id=request_id,
            method=method,
            deadline_ms=deadline_ms,
            sender=sender,
        ),
        payload,
    )


def reply(request_id: int, payload: bytes, method: str = "", sender: str = "") -> list[bytes]:
    """Frames of a successful REPLY."""
    return encode(
        pb.Header(kind=pb.REPLY, request_id=request_id, method=method, sender=sender), payload
    )


def error_reply(
    request_id: int, code: int, detail: str = "", method: str = "", sender: str = ""
) -> list[bytes]:
    """Frames of an error REPLY: no payload, just the code and a short safe detail.

    The codes are a closed set: one outside `ErrorCode` (a handler's bug, or a peer's
    `fabric.Echo` asking for any uint32 — past 2^31 the Header would not even serialize) goes
    out as INTERNAL.
    """
    return encode(
        pb.Header(
            kind=pb.REPLY,
            request_id=request_id,
            method=method,
            error=pb.ErrorCode.ValueType(code) if code in _ERROR_CODES else pb.INTERNAL,
            detail=detail[:200],
            sender=sender,
        )
    )


def event(method: str, payload: bytes, sender: str = "") -> list[bytes]:
    """Frames of an EVENT (PUB/SUB or a push to a client)."""
    return encode(pb.Header(kind=pb.EVENT, method=method, sender=sender), payload)


class Encoder:
    """Builds the frame of the hot paths for one sender, reusing one Header per method.

    Constructing a Header from keyword arguments costs more than the rest of an encode, so this
    keeps one per method (and one for replies) and sets only request_id and deadline_ms. Its
    methods return the single frame itself, not a list. Not thread-safe: one Encoder per socket
    owner.
    """

    def __init__(self, sender: str = "") -> None:
        self.sender = sender
        self._requests: dict[str, pb.Header] = {}
        self._reply = pb.Header(kind=pb.REPLY, sender=sender)

    def request(self, method: str, request_id: int, deadline_ms: int, payload: bytes) -> bytes:
        """The frame of a REQUEST; the same bytes as `request()`."""
        header = self._requests.get(method)
        if header is None:
            header = self._requests[method] = pb.Header(
                kind=pb.REQUEST, method=method, sender=self.sender
            )
        header.request_id = request_id
        header.deadline_ms = deadline_ms
        return frame(header.SerializeToString(), payload)

    def reply(self, request_id: int, payload: bytes) -> bytes:
        """The frame of a successful REPLY; the same bytes as `reply()`."""
        header = self._reply
        header.request_id = request_id
        return frame(header.SerializeToString(), payload)


def decode(frames: Sequence[bytes], max_bytes: int) -> Envelope:
    """Validate and decode the envelope frames (identity/topic already removed)."""
    if len(frames) != N_FRAMES:
        raise frame_count_error(len(frames))
    return Envelope(*decode_frame(frames[0], max_bytes))


def frame_count_error(count: int) -> EnvelopeError:
    """The error for a message of `count` envelope frames (`N_FRAMES` is right)."""
    return EnvelopeError(DecodeError.FRAME_COUNT, f"{count} frames")


def decode_frame(data: bytes, max_bytes: int) -> tuple[pb.Header, bytes]:
    """`decode` of the one frame of a message whose frame count is right: (header, payload).

    The RPC hot paths count the frames themselves (`frame_count_error` if wrong) and take the
    pair, not an Envelope.
    """
    size = len(data)
    if size > max_bytes:
        raise EnvelopeError(DecodeError.TOO_LARGE, f"{size} bytes")
    end = _HEADER_ENDS.get(data[:_HEADER_AT])
    if end is None:  # not a prebuilt prefix: a long header, or the magic or length is wrong
        end = _header_end(data)
    if end > size:
        raise EnvelopeError(DecodeError.BAD_HEADER, "header length past the frame")
    try:
        header = _parse_header(data[_HEADER_AT:end])
    except (_PbDecodeError, ValueError) as err:  # ValueError: invalid UTF-8 in a string
        raise EnvelopeError(DecodeError.BAD_HEADER, type(err).__name__) from None
    kind = header.kind
    if kind == _REPLY:
        if not header.request_id and not header.error:
            raise EnvelopeError(DecodeError.MISSING_FIELD, "request_id", header)
    elif kind == _REQUEST:
        if not header.request_id:
            raise EnvelopeError(DecodeError.MISSING_FIELD, "request_id", header)
        if not header.method:
            raise EnvelopeError(DecodeError.MISSING_FIELD, "method", header)
        if header.deadline_ms <= 0:
            raise EnvelopeError(DecodeError.MISSING_FIELD, "deadline_ms", header)
    elif kind not in _KINDS:
        raise EnvelopeError(DecodeError.BAD_KIND, str(kind), header)
    elif not header.method:
        raise EnvelopeError(DecodeError.MISSING_FIELD, "method", header)
    return header, data[end:]


def _header_end(data: bytes) -> int:
    """Where the header of `data` ends, by its prefix (EnvelopeError if there is none)."""
    if not data.startswith(MAGIC):
        raise EnvelopeError(DecodeError.BAD_MAGIC)
    if len(data) < _HEADER_AT:
        raise EnvelopeError(DecodeError.BAD_HEADER, "no header length")
    return _HEADER_AT + (data[_MAGIC_LEN] << 8 | data[_MAGIC_LEN + 1])


def parse_payload(msg_type: type[M], payload: bytes, header: pb.Header | None = None) -> M:
    """Parse `payload` as `msg_type`; a bad payload is an EnvelopeError(BAD_PAYLOAD)."""
    try:
        return msg_type.FromString(payload)
    except (_PbDecodeError, ValueError) as err:
        raise EnvelopeError(DecodeError.BAD_PAYLOAD, type(err).__name__, header) from None
