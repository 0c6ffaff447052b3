"""The JSON frames of the WebSocket plane, translated to and from so-im envelope frames.

Role: a `soim.json` WebSocket connection speaks the client protocol (schema/client.proto) in its
canonical proto3 JSON mapping (google.protobuf.json_format), one object per text frame:

    request  {"id": 7, "method": "Login", "body": {...LoginRequest...}}   (client -> gateway)
    reply    {"id": 7, "body": {...LoginReply...}}
    error    {"id": 7, "error": {"code": "BAD_CREDENTIALS", "detail": "..."}}
    push     {"push": {...Push...}}

`JsonCodec` (one per connection) turns a request into the envelope frame the ZeroMQ plane would
have carried, so the gateway serves both planes through one `RpcServer`, and turns the frames the
gateway sends back (replies, error replies, pushes) into JSON. A reply's header does not name its
method, so the codec remembers the method of each request id in flight (at most
`MAX_IN_FLIGHT`; an entry the gateway never answered — a request past its deadline — expires
after the gateway's own deadline). Every refusal is a `FrameError` with a wire ErrorCode and the
request id when it was read (0 before). No sockets.
"""

from __future__ import annotations

import json
import time

from google.protobuf import json_format

from fabric import envelope, timing
from fabric.methods import Method
from schema import client_pb2
from schema import common_pb2 as pb
from schema.contracts.client import CLIENT, PUSH_METHOD

MAX_IN_FLIGHT = 1000
"""Requests of one connection awaiting their reply (as the ZeroMQ plane's 1000-message queue)."""
MAX_ID = (1 << 53) - 1
"""The largest request id: every JavaScript number up to it is an exact integer."""
MAX_DEADLINE_MS = int(timing.CLIENT_REQUEST_TIMEOUT_S * 1000)
_EXPIRY_S = timing.CLIENT_REQUEST_TIMEOUT_S + 1.0
_EVENT, _REPLY = pb.EVENT, pb.REPLY
_KEYS = frozenset({"id", "method", "body", "deadlineMs", "deadline_ms"})
_PUSH = client_pb2.Push
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class FrameError(Exception):
    """A client frame refused: answer `code` (a common.proto ErrorCode) for request `rid`."""

    def __init__(
        self, code: pb.ErrorCode.ValueType, detail: str, rid: int = 0, reason: str = "bad_json"
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail[:200]
        self.rid = rid
        self.reason = reason


def error_json(rid: int, code: pb.ErrorCode.ValueType, detail: str) -> str:
    """The JSON error frame for request `rid`."""
    return _dumps({"id": rid, "error": {"code": pb.ErrorCode.Name(code), "detail": detail}})


def _as_dict(message: object) -> dict[str, object]:
    return json_format.MessageToDict(message)  # type: ignore[arg-type]


class JsonCodec:
    """The JSON side of one `soim.json` connection."""

    def __init__(self) -> None:
        self._pending: dict[int, tuple[Method, float]] = {}
        self._encoder = envelope.Encoder()

    def __len__(self) -> int:
        return len(self._pending)

    def request(self, text: str | bytes) -> bytes:
        """The envelope frame of a JSON request; FrameError if it is not one."""
        try:
            obj = json.loads(text)
        except RecursionError:
            raise FrameError(pb.BAD_FRAME, "JSON nested too deeply") from None
        except ValueError as err:  # not JSON, or not UTF-8
            raise FrameError(pb.BAD_FRAME, f"not JSON: {str(err)[:80]}") from None
        if not isinstance(obj, dict):
            raise FrameError(pb.BAD_FRAME, "a request is a JSON object")
        rid = obj.get("id")
        if type(rid) is not int or not 0 < rid <= MAX_ID:
            raise FrameError(pb.BAD_FRAME, f"id: an integer from 1 to {MAX_ID}")
        extra = obj.keys() - _KEYS
        if extra:
            raise FrameError(pb.BAD_FRAME, f"unknown key {sorted(extra)[0][:40]!r}", rid)
        name = obj.get("method")
        if not isinstance(name, str):
            raise FrameError(pb.BAD_FRAME, "method: the name of a Client rpc", rid)
        method = CLIENT.get(name)
        if method is None:
            raise FrameError(pb.UNKNOWN_METHOD, name[:64], rid, "unknown_method")
        deadline_ms = obj.get("deadlineMs", obj.get("deadline_ms", MAX_DEADLINE_MS))
        if type(deadline_ms) is not int or deadline_ms <= 0:
            raise FrameError(pb.BAD_FRAME, "deadlineMs: a positive integer", rid)
        body = obj.get("body", {})
        if not isinstance(body, dict):
            raise FrameError(pb.BAD_REQUEST, "body: a JSON object", rid, "bad_payload")
        try:
            payload = json_format.ParseDict(body, method.request()).SerializeToString()
        except RecursionError:
            raise FrameError(pb.BAD_REQUEST, "body nested too deeply", rid, "bad_payload") from None
        except Exception as err:  # json_format.ParseError and what it lets through
            raise FrameError(pb.BAD_REQUEST, f"body: {err}", rid, "bad_payload") from None
        self._expect(rid, method)
        deadline = int(time.time() * 1000) + min(deadline_ms, MAX_DEADLINE_MS)
        return self._encoder.request(method.name, rid, deadline, payload)

    def _expect(self, rid: int, method: Method) -> None:
        now = time.monotonic()
        pending = self._pending
        if len(pending) >= MAX_IN_FLIGHT or rid in pending:
            for key in [k for k, (_, expires) in pending.items() if expires < now]:
                del pending[key]
            if rid in pending:
                raise FrameError(pb.BAD_FRAME, f"id {rid} is already in flight", rid)
            if len(pending) >= MAX_IN_FLIGHT:
                raise FrameError(
                    pb.RATE_LIMITED, f"at most {MAX_IN_FLIGHT} requests in flight", rid, "in_flight"
                )
        pending[rid] = (method, now + _EXPIRY_S)

    def forget(self, rid: int) -> None:
        """The request `rid` was answered without reaching the gateway's handlers."""
        self._pending.pop(rid, None)

    def outgoing(self, frame: bytes) -> str | None:
        """The JSON text of a frame the gateway sends (a reply or a push); None if there is
        nothing to say (a reply to a request this connection no longer awaits)."""
        header, payload = envelope.decode_frame(frame, len(frame))
        if header.kind == _EVENT:
            if header.method != PUSH_METHOD:
                return None
            return push_json(payload)
        if header.kind != _REPLY:
            return None
        rid = header.request_id
        entry = self._pending.pop(rid, None)
        if header.error:
            return error_json(rid, header.error, header.detail)
        if entry is None:
            return None
        reply = entry[0].reply.FromString(payload)
        return _dumps({"id": rid, "body": _as_dict(reply)})


def push_json(payload: bytes) -> str:
    """The JSON frame of a serialized client.Push."""
    return _dumps({"push": _as_dict(_PUSH.FromString(payload))})
