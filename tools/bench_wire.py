"""What the bench's client workers put on a connection and read from it: `EnvelopeWire` for
`soimctl bench chat --transport zmq|ws` (envelope frames: a DEALER's messages, or binary
WebSocket frames of `soim.proto`), `JsonWire` for `--transport wsjson` (the JSON text frames of
`soim.json`, what the web client speaks; docs/websocket.md).

Role: a worker (`tools.bench_clients`) drives every connection through one wire: `request` /
`reply` for the setup steps (a serialized request message in, its reply's error code and
serialized message out), `send` / `event` / `ack` for a chat phase (a Send request; a message
push as `Pushed`, any reply as `Reply`). `JsonWire` keeps protobuf off a chat phase's path:
each Send is one %-format of a template built once, each reply and push one `json.loads` and a
few dict lookups, so the client does not add the JSON cost it measures on the gateway (the
bench's JSON reports the client worker's cores apart: cpu_cores "clients"). Setup steps go
through json_format, their cost is not measured.
No sockets: the worker's DEALERs and `tools.bench_ws.WsConn` carry the frames.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Protocol

from google.protobuf import json_format
from websockets.typing import Subprotocol

from fabric import envelope, timing
from schema import client_pb2
from schema import common_pb2 as pb
from schema.contracts.client import CLIENT
from tools.bench_ws import JSON, PROTO

_OK, _EVENT, _REPLY = pb.OK, pb.EVENT, pb.REPLY
_MAX_BYTES = timing.CLUSTER_MAX_FRAME_BYTES


class Pushed(NamedTuple):
    """A chat message pushed to the connection."""

    msg_id: int
    body: str
    to_group: bool


class Reply(NamedTuple):
    """A reply to request `rid`: its error code's name ("" when OK) and its body, for `ack`."""

    rid: int
    error: str
    body: Any


class Wire(Protocol):
    subprotocol: Subprotocol

    def request(self, name: str, rid: int, deadline_ms: int, payload: bytes) -> bytes | str: ...

    def reply(self, frame: bytes | str, rid: int, name: str) -> tuple[int, bytes] | None: ...

    def send(
        self, rid: int, deadline_ms: int, client_msg_id: str, field: str, to: int, body: str
    ) -> bytes | str: ...

    def event(self, frame: bytes | str) -> Pushed | Reply | str | None: ...

    def ack(self, body: Any) -> tuple[int, int, int]: ...


class EnvelopeWire:
    """Envelope frames (bytes), as `soim` sends on ZeroMQ and `soim.proto` on a WebSocket."""

    subprotocol = PROTO

    def __init__(self) -> None:
        self._encoder = envelope.Encoder()
        self._send = CLIENT["Send"].name

    def request(self, name: str, rid: int, deadline_ms: int, payload: bytes) -> bytes:
        """The frame of a client.<name> request."""
        return self._encoder.request(CLIENT[name].name, rid, deadline_ms, payload)

    def reply(self, frame: bytes | str, rid: int, name: str) -> tuple[int, bytes] | None:
        """(error code, payload) if `frame` answers request `rid`; None for anything else."""
        try:
            env = envelope.decode([frame], _MAX_BYTES)  # type: ignore[list-item]
        except envelope.EnvelopeError:
            return None
        if env.header.kind != _REPLY or env.header.request_id != rid:
            return None  # a push, or the reply to an earlier keepalive ping
        return env.header.error, env.payload

    def send(
        self, rid: int, deadline_ms: int, client_msg_id: str, field: str, to: int, body: str
    ) -> bytes:
        """The frame of a Send request."""
        request = client_pb2.SendRequest(client_msg_id=client_msg_id, body=body, **{field: to})
        return self._encoder.request(self._send, rid, deadline_ms, request.SerializeToString())

    def event(self, frame: bytes | str) -> Pushed | Reply | str | None:
        """A message push, a reply (its payload still serialized), the reason of an unreadable
        frame, or None for another push."""
        try:
            env = envelope.decode([frame], _MAX_BYTES)  # type: ignore[list-item]
        except envelope.EnvelopeError as err:
            return f"bad frame {err.reason.value}"
        header = env.header
        if header.kind == _EVENT:
            push = client_pb2.Push.FromString(env.payload)
            if push.WhichOneof("item") != "message":
                return None
            msg = push.message
            return Pushed(msg.msg_id, msg.body, msg.HasField("to_group"))
        if header.error != _OK:
            return Reply(header.request_id, pb.ErrorCode.Name(header.error), None)
        return Reply(header.request_id, "", env.payload)

    def ack(self, body: Any) -> tuple[int, int, int]:
        """(conv_id, seq, msg_id) of a serialized SendAck."""
        ack = client_pb2.SendAck.FromString(body)
        return ack.conv_id, ack.seq, ack.msg_id


SEND_JSON = '{"id":%d,"method":"Send","body":{"clientMsgId":"%s","%s":"%d","body":"%s"}}'
"""A Send request in JSON; client_msg_id and body are the bench's own ASCII (nothing to escape)."""
CAMEL = {"to_user": "toUser", "to_group": "toGroup"}
_dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads
_CODES = frozenset(pb.ErrorCode.keys())


class JsonWire:
    """JSON text frames (str) of `soim.json`."""

    subprotocol = JSON

    def request(self, name: str, rid: int, deadline_ms: int, payload: bytes) -> str:
        """The JSON request of client.<name>; without deadlineMs (the gateway gives every
        request its own, as it does the web client's)."""
        body = json_format.MessageToDict(CLIENT[name].request.FromString(payload))
        return _dumps({"id": rid, "method": name, "body": body})

    def reply(self, frame: bytes | str, rid: int, name: str) -> tuple[int, bytes] | None:
        """(error code, serialized reply) if `frame` answers request `rid` of client.<name>;
        None for anything else."""
        try:
            obj = _loads(frame)
        except ValueError:
            return None
        if type(obj) is not dict or obj.get("id") != rid:
            return None
        error = obj.get("error")
        if error is not None:
            code = error.get("code")
            return (pb.ErrorCode.Value(code) if code in _CODES else pb.INTERNAL), b""
        reply = json_format.ParseDict(obj.get("body", {}), CLIENT[name].reply())
        return _OK, reply.SerializeToString()

    def send(
        self, rid: int, deadline_ms: int, client_msg_id: str, field: str, to: int, body: str
    ) -> str:
        """A Send request."""
        return SEND_JSON % (rid, client_msg_id, CAMEL[field], to, body)

    def event(self, frame: bytes | str) -> Pushed | Reply | str | None:
        """A message push, a reply (its body still a dict), the reason of an unreadable frame,
        or None for another push."""
        try:
            obj = _loads(frame)
        except ValueError:
            return "bad frame json"
        if type(obj) is not dict:
            return "bad frame json"
        push = obj.get("push")
        if push is not None:
            msg = push.get("message")
            if msg is None:
                return None
            return Pushed(int(msg["msgId"]), msg["body"], "toGroup" in msg)
        error = obj.get("error")
        if error is not None:
            return Reply(obj.get("id", 0), str(error.get("code")), None)
        return Reply(obj.get("id", 0), "", obj.get("body", {}))

    def ack(self, body: Any) -> tuple[int, int, int]:
        """(conv_id, seq, msg_id) of a SendAck in JSON."""
        return int(body["convId"]), int(body.get("seq", 0)), int(body["msgId"])


WIRES: dict[str, type[EnvelopeWire] | type[JsonWire]] = {PROTO: EnvelopeWire, JSON: JsonWire}
"""The wire of each WebSocket subprotocol (a DEALER speaks soim.proto's frames)."""
