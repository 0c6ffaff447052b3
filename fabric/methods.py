"""RPC method specs: the name, request and reply types, and whether a call may be retried.

Role: the shared catalogue both ends of an RPC agree on; this module holds the `Method` type,
`catalogue` (a .proto service's methods, each with the `idempotency_level` its rpc declares),
and the methods every node serves (fabric.Echo, fabric.Status, node.Drain). Role-specific
catalogues live in the service contracts. No sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from schema import cluster_pb2, common_pb2, fabric_pb2


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC. Only a method whose rpc declares an `idempotency_level` (NO_SIDE_EFFECTS or
    IDEMPOTENT, google.protobuf.MethodOptions) is ever asked again (`fabric.retry`)."""

    name: str
    request: type[Message]
    reply: type[Message]
    idempotency: int = MethodOptions.IDEMPOTENCY_UNKNOWN


def catalogue(service: ServiceDescriptor) -> dict[str, Method]:
    """The methods of a .proto `service` block, named "<service in lower case>.<rpc>".

    The .proto services are method tables only (no gRPC); each rpc's `idempotency_level`
    option says whether a caller may ask it again.
    """
    prefix = service.name.lower()
    return {
        m.name: Method(
            f"{prefix}.{m.name}",
            GetMessageClass(m.input_type),
            GetMessageClass(m.output_type),
            m.GetOptions().idempotency_level,
        )
        for m in service.methods
    }


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
