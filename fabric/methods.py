"""RPC method specs: the name, request and reply types, and whether a call may be retried.

Role: the shared catalogue both ends of an RPC agree on; this module holds the `Method` type,
`catalogue` (a .proto service's methods, each with the `idempotency_level` its rpc declares),
and the methods every node serves (fabric.Echo, fabric.Status, node.Drain). Role-specific
catalogues live in the service contracts. No sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from schema import cluster_pb2, common_pb2, fabric_pb2

IDEMPOTENCY_UNKNOWN = 0
"""google.protobuf.MethodOptions.IDEMPOTENCY_UNKNOWN: the rpc declares no idempotency_level."""


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC. Only a method whose rpc declares an `idempotency_level` (NO_SIDE_EFFECTS or
    IDEMPOTENT, google.protobuf.MethodOptions) is ever asked again (`fabric.retry`)."""

    name: str
    request: type[Message]
    reply: type[Message]
    idempotency: int = IDEMPOTENCY_UNKNOWN


def catalogue(service: ServiceDescriptor) -> dict[str, Method]:
    """The methods of a .proto `service` block, named "<service in lower case>.<rpc>".

    The .proto services are method tables only (no gRPC); each rpc's `idempotency_level`
    option says whether a caller may ask it again.
    """
    prefix = service.name.lower()
    levels = _idempotency_levels(service)
    return {
        m.name: Method(
            f"{prefix}.{m.name}",
            GetMessageClass(m.input_type),
            GetMessageClass(m.output_type),
            levels.get(m.name, IDEMPOTENCY_UNKNOWN),
        )
        for m in service.methods
    }


# Field numbers of descriptor.proto: FileDescriptorProto.service, ServiceDescriptorProto.method,
# the name of both, MethodDescriptorProto.options and MethodOptions.idempotency_level.
_SERVICE, _METHOD, _NAME, _OPTIONS, _IDEMPOTENCY_LEVEL = 6, 2, 1, 4, 34


def _idempotency_levels(service: ServiceDescriptor) -> dict[str, int]:
    """Each rpc's declared idempotency_level, read from its .proto file's serialized descriptor.

    `MethodDescriptor.GetOptions()` would give the same, but loads google.protobuf.descriptor_pb2
    (all of descriptor.proto's classes, ~0.3 MB in every node) for this one number.
    """
    levels: dict[str, int] = {}
    for block in _bytes(service.file.serialized_pb, _SERVICE):
        if _bytes(block, _NAME) == [service.name.encode()]:
            for method in _bytes(block, _METHOD):
                for options in _bytes(method, _OPTIONS):
                    for level in _ints(options, _IDEMPOTENCY_LEVEL):
                        levels[_bytes(method, _NAME)[0].decode()] = level
    return levels


def _bytes(data: bytes, number: int) -> list[bytes]:
    """The length-delimited fields `number` of a serialized message."""
    return [value for n, value in _fields(data) if n == number and isinstance(value, bytes)]


def _ints(data: bytes, number: int) -> list[int]:
    """The varint fields `number` of a serialized message."""
    return [value for n, value in _fields(data) if n == number and isinstance(value, int)]


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field of a serialized message: an int for a varint, the
    bytes of a length-delimited field; fixed-width fields are skipped."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(data, i)
            yield key >> 3, value
        elif wire == 2:
            size, i = _varint(data, i)
            yield key >> 3, data[i : i + size]
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire} in a file descriptor")


def _varint(data: bytes, i: int) -> tuple[int, int]:
    """The varint at `data[i:]` and the offset after it."""
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


_FABRIC = catalogue(fabric_pb2.DESCRIPTOR.services_by_name["Fabric"])
ECHO = _FABRIC["Echo"]
STATUS = _FABRIC["Status"]
NODE = catalogue(cluster_pb2.DESCRIPTOR.services_by_name["Node"])
"""Control calls every node serves: node.Drain."""


class RpcError(Exception):
    """An RPC ended with an ErrorCode (common.proto) other than OK; `detail` is safe to show."""

    def __init__(self, code: common_pb2.ErrorCode.ValueType, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        name = common_pb2.ErrorCode.Name(code) if code in common_pb2.ErrorCode.values() else code
        super().__init__(f"{name}: {detail}" if detail else str(name))
